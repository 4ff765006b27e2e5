from pathlib import Path

from rayprism.platform.chunking import chunk_files, chunk_markdown

DOC = """# Title

Intro paragraph.

## Install

Run this:

```bash
# not a heading
make run
```

Second paragraph of install.

## Empty section

## Usage
""" + "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(8))


def test_chunks_follow_headings_and_keep_code_fences_whole():
    chunks = chunk_markdown(DOC, max_chars=600)
    assert chunks[0].heading == "Title" and chunks[0].text == "Intro paragraph."
    install = [c for c in chunks if c.heading == "Install"]
    assert len(install) == 1 and "# not a heading\nmake run" in install[0].text
    usage = [c for c in chunks if c.heading == "Usage"]
    assert len(usage) > 1 and all(len(c.text) <= 600 for c in usage)
    assert "".join(c.text for c in usage).count("Paragraph") == 8
    assert not [c for c in chunks if c.heading == "Empty section"]


def test_file_chunks_have_stable_ids_and_sources(tmp_path):
    (tmp_path / "docs").mkdir()
    path = tmp_path / "docs" / "guide.md"
    path.write_text(DOC)
    first = chunk_files([path], tmp_path)
    assert first == chunk_files([path], tmp_path)
    assert first[0]["id"] == "docs/guide.md#0" and first[0]["source"] == "docs/guide.md"
    assert first[0]["text"].startswith("Title\n\nIntro")
    assert {d["heading"] for d in first} == {"Title", "Install", "Usage"}


def test_repository_docs_chunk_without_error():
    root = Path(__file__).resolve().parents[2]
    assert chunk_files([root / "README.md"], root)
