"""File extraction on a folder made here: Markdown, HTML, text and PDFs that fpdf2 writes (a real
PDF library, not bytes typed by hand), a truncated PDF, nested folders and globs."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from rayprism.platform.text.files import (
    FileDocument,
    FileProblem,
    SourceFile,
    content_hash,
    find_files,
    read_documents,
    read_file,
)

MARKDOWN = """Intro before any heading.

```sh
# a comment, not the title
```

# Install guide

## Linux

Run make.

## Last section

The quokka phrase closes this guide.
"""

HTML = """<!doctype html>
<html><head><title>Release  notes</title><style>.x { color: red }</style>
<script>var hidden = "script text never extracted";</script></head>
<body><nav><a href="/">Home</a></nav>
<h1>Version 2</h1>
<p>Faster <b>search</b> and <a href="https://example.org">a link text</a>.</p>
<h2>Known issues</h2>
<ul><li>first issue</li><li>The pangolin phrase ends the page.</li></ul>
</body></html>
"""


def _pdf(path: Path, pages: list[str], title: str | None = None) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    data = bytes(pdf.output())
    path.write_bytes(data)
    return data


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "docs"
    (root / "guides" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "guides" / "install.md").write_text(MARKDOWN, encoding="utf-8")
    (root / "notes.html").write_text(HTML, encoding="utf-8")
    (root / "guides" / "deep" / "plain.txt").write_text("Plain words.\nThe axolotl line.\n", encoding="utf-8")
    (root / "README").write_text("A file with no suffix, in UTF-8: ünïcode.", encoding="utf-8")
    (root / "binary").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / ".hidden" / "secret.md").write_text("# hidden", encoding="utf-8")
    (root / ".dotfile.md").write_text("# hidden too", encoding="utf-8")
    body = "Numbers and words on every page. " * 12
    _pdf(root / "report.pdf", [f"Report page {i}. {body}" for i in range(1, 4)] + ["The narwhal phrase is on the last page."],
         title="Quarterly report")
    _pdf(root / "guides" / "untitled.pdf", ["First line is the title\nThen more text."])
    good = _pdf(tmp_path / "whole.pdf", ["This PDF will be cut short."] * 3)
    (root / "broken.pdf").write_bytes(good[: len(good) // 2])
    return root


def _by_id(records):
    documents = {record.id: record for record in records if isinstance(record, FileDocument)}
    problems = [record for record in records if isinstance(record, FileProblem)]
    return documents, problems


def test_a_folder_is_read_recursively_with_relative_ids_and_problems_in_place(folder):
    documents, problems = _by_id(list(read_documents([folder])))
    assert set(documents) == {"guides/install.md", "notes.html", "guides/deep/plain.txt", "README", "report.pdf",
                              "guides/untitled.pdf"}
    assert sorted(Path(problem.path).name for problem in problems) == ["binary", "broken.pdf"]
    broken = next(problem for problem in problems if problem.path.endswith("broken.pdf"))
    assert broken.path == str(folder / "broken.pdf") and "\n" not in broken.reason and broken.reason
    assert str(broken) == f"{folder / 'broken.pdf'}: {broken.reason}"
    assert "not UTF-8" in next(problem.reason for problem in problems if problem.path.endswith("binary"))
    for document in documents.values():
        path = folder / document.id
        assert document.path == path.absolute().as_posix()
        assert document.content_hash == hashlib.sha256(path.read_bytes()).hexdigest() == content_hash(path)
        assert datetime.strptime(document.modified, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() \
            == int(path.stat().st_mtime)
        assert document.fields()["id"] == document.id and set(document.fields()) == {
            "id", "text", "title", "path", "modified", "content_hash", "format"}


def test_each_format_gives_its_text_and_title(folder):
    documents, _ = _by_id(list(read_documents([folder])))
    markdown = documents["guides/install.md"]
    assert (markdown.title, markdown.format, markdown.markdown) == ("Install guide", "markdown", True)
    assert markdown.text == MARKDOWN
    html = documents["notes.html"]
    assert (html.title, html.format, html.markdown) == ("Release notes", "html", True)
    assert "# Version 2" in html.text and "## Known issues" in html.text
    assert "The pangolin phrase ends the page." in html.text and "a link text" in html.text
    assert "https://example.org" not in html.text and "script text" not in html.text and "color" not in html.text
    text = documents["guides/deep/plain.txt"]
    assert (text.title, text.text, text.markdown) == ("plain", "Plain words.\nThe axolotl line.\n", False)
    assert documents["README"].text == "A file with no suffix, in UTF-8: ünïcode."
    report = documents["report.pdf"]
    assert (report.title, report.format, report.markdown) == ("Quarterly report", "pdf", False)
    assert "The narwhal phrase is on the last page." in report.text
    assert report.text.index("Report page 1") < report.text.index("Report page 3") < report.text.index("narwhal")
    assert documents["guides/untitled.pdf"].title == "First line is the title"


def test_titles_fall_back_to_the_file_stem(tmp_path):
    (tmp_path / "no-heading.md").write_text("## only a second-level heading\n\ntext", encoding="utf-8")
    (tmp_path / "bare.html").write_text("<p>no title, no h1</p>", encoding="utf-8")
    (tmp_path / "h1.html").write_text("<body><h1>From  the h1</h1><p>x</p></body>", encoding="utf-8")
    documents, problems = _by_id(list(read_documents([tmp_path])))
    assert not problems
    assert {key: document.title for key, document in documents.items()} == {
        "no-heading.md": "no-heading", "bare.html": "bare", "h1.html": "From the h1"}


def test_a_text_file_in_a_legacy_encoding_is_read_as_windows_1252(tmp_path):
    (tmp_path / "old.txt").write_bytes("Café crème, déjà vu, à la française. Über alles.".encode("cp1252") * 3)
    (document,) = read_documents([tmp_path / "old.txt"])
    assert document.text.startswith("Café crème, déjà vu, à la française. Über alles.")


def test_globs_files_and_roots(folder):
    pattern = str(folder / "**" / "*.pdf")
    documents, problems = _by_id(list(read_documents([pattern])))
    assert set(documents) == {"report.pdf", "guides/untitled.pdf"} and len(problems) == 1
    # a glob's ids are relative to its fixed prefix, a file's to its folder, unless a root is given
    documents, _ = _by_id(list(read_documents([str(folder / "guides" / "*.md"), folder / "guides" / "deep" / "plain.txt"])))
    assert set(documents) == {"install.md", "plain.txt"}
    documents, _ = _by_id(list(read_documents([folder / "guides" / "deep" / "plain.txt"], root=folder)))
    assert set(documents) == {"guides/deep/plain.txt"}


def test_arguments_that_name_nothing_or_clash_are_problems(folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "install.md").write_text("# another install.md", encoding="utf-8")
    found = find_files([folder / "guides" / "install.md", other / "install.md", folder / "guides" / "install.md",
                        folder / "image.png", tmp_path / "missing", str(folder / "*.nothing"), folder / "guides"],
                       root=None)
    sources = [item for item in found if isinstance(item, SourceFile)]
    reasons = {Path(item.path).name: item.reason for item in found if isinstance(item, FileProblem)}
    assert [source.id for source in sources] == ["install.md", "untitled.pdf", "deep/plain.txt"]  # walk order
    assert "already taken by" in reasons["install.md"]
    assert "unsupported file type '.png'" in reasons["image.png"]
    assert reasons["missing"] == "no such file or folder"
    assert reasons["*.nothing"] == "no file matches this pattern"
    outside = find_files([other / "install.md"], root=folder)
    assert isinstance(outside[0], FileProblem) and "outside the root" in outside[0].reason


def test_an_unreadable_file_is_reported_and_the_rest_is_read(folder):
    (folder / "dangling.md").symlink_to(folder / "gone.md")  # listed by the walk, unreadable (even by root)
    documents, problems = _by_id(list(read_documents([folder])))
    reason = next(problem.reason for problem in problems if problem.path.endswith("dangling.md"))
    assert reason.startswith("FileNotFoundError: ") and "No such file" in reason
    assert "report.pdf" in documents and len(documents) == 6


def test_a_scanned_pdf_without_text_is_a_problem(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)  # a drawing, no text layer
    (tmp_path / "scan.pdf").write_bytes(bytes(pdf.output()))
    (problem,) = read_documents([tmp_path / "scan.pdf"])
    assert isinstance(problem, FileProblem) and "needs OCR" in problem.reason


def test_read_file_takes_one_found_file(folder):
    (source,) = [item for item in find_files([folder / "notes.html"])]
    document = read_file(source)
    assert isinstance(document, FileDocument) and document.id == "notes.html"
