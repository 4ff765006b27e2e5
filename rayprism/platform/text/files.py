"""Files and folders read into documents: Markdown, plain text, HTML and PDF.

``rayprism ingest COLLECTION PATH...`` and batch jobs (``input: {format: files}``) take what a user
has (a docs folder, a glob, a few PDFs) rather than rows they cut themselves. Reading is in two steps
so that each caller does only what it needs: :func:`find_files` lists what the arguments name (cheap,
on the driver), :func:`read_file` extracts one file (in a worker, or after the ingest command has seen
from :func:`content_hash` that the file is unchanged and can be skipped). :func:`read_documents` does
both, in order.

What is read, and how:

- Markdown (``.md``, ``.markdown``): the text as it is; title: the first level-1 heading, else the file
  name without its suffix (the *stem*).
- Plain text (``.txt``, and files with no suffix): title: the stem. Text is UTF-8; a ``.txt`` or
  Markdown file that is not is read as Windows-1252; a file with no suffix must be UTF-8 (it is more
  likely a binary than a text in another encoding).
- HTML (``.html``, ``.htm``): parsed by BeautifulSoup (lxml) and converted to Markdown by markdownify,
  so its headings give the chunker the same section context as a Markdown file; scripts, styles and
  the ``<head>`` are dropped, links and images keep their text only. Title: ``<title>``, else the first
  ``<h1>``, else the stem.
- PDF (``.pdf``): pypdf's text, pages joined by blank lines; title: the metadata title, else the first
  line of text, else the stem. A PDF with no text layer (a scan) is a problem: it needs OCR.

Ids are the file's path relative to the argument it was found through (a folder, a glob's fixed
prefix, a file's own folder), in POSIX form, or relative to ``root`` when one is given: the same
folder read from another machine gives the same ids. Hidden files and folders (a name starting with
".") are not entered, and files of other types in a folder or among a glob's matches are left out
silently. A file that cannot be read, a file named explicitly whose type is not supported, an
argument that names nothing, or two files that would share one id: each is a :class:`FileProblem`
(path and a one-line reason), and the rest is read.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Literal

__all__ = ["FileDocument", "FileFormat", "FileProblem", "SourceFile", "content_hash", "find_files",
           "read_documents", "read_file"]

FileFormat = Literal["markdown", "text", "html", "pdf"]

SUFFIXES: dict[str, FileFormat] = {
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", "": "text",
    ".html": "html", ".htm": "html", ".pdf": "pdf",
}
"""Lower-case file suffix → how the file is read."""

RECOMMENDED_FIELDS = ("path", "title", "modified")
"""The file fields a collection for files should declare (varchar); ``title`` also heads every piece's context
in a chunked collection."""
FILE_FIELDS = (*RECOMMENDED_FIELDS, "format", "content_hash")
"""Every field a file gives (:meth:`FileDocument.fields`); those the collection declares are sent."""
_GLOB_CHARACTERS = frozenset("*?[")
_HASH_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file found by :func:`find_files`, not read yet."""

    id: str
    """Path relative to the root it was found under, POSIX separators: the document id."""
    path: Path
    """Absolute path."""
    format: FileFormat


@dataclass(frozen=True, slots=True)
class FileDocument:
    """One file's document: ``id`` and the fields a collection stores (:meth:`fields`)."""

    id: str
    text: str
    title: str
    path: str
    """The file's absolute path, POSIX separators."""
    modified: str
    """Last modification, ISO 8601 in UTC to the second ("2024-05-01T12:00:00Z"): readable, and ordered
    as strings are, so a filter can compare it."""
    content_hash: str
    """SHA-256 of the file's bytes, hex: equal hashes mean an unchanged file, whatever its time stamp."""
    format: FileFormat

    @property
    def markdown(self) -> bool:
        """Whether ``text`` is Markdown (Markdown files and converted HTML): how the chunker should split it."""
        return self.format in ("markdown", "html")

    def record(self, text_field: str, fields: Iterable[str]) -> dict[str, str]:
        """The document a collection with this ``text_field`` takes: id, text and those of ``fields`` a file gives."""
        given = self.fields()
        return {"id": self.id, text_field: self.text, **{field: given[field] for field in fields if field in FILE_FIELDS}}

    def fields(self) -> dict[str, str]:
        """The record a collection upserts: ``{"id", "text", "title", "path", "modified", "content_hash",
        "format"}``."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A file (or an argument) that gave no document, and why, in one line."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def read_documents(paths: Iterable[str | os.PathLike], *, root: str | os.PathLike | None = None
                   ) -> Iterator[FileDocument | FileProblem]:
    """Every document that ``paths`` (files, folders read recursively, globs) name, in a stable order,
    each file's problem in its place."""
    for found in find_files(paths, root=root):
        yield read_file(found) if isinstance(found, SourceFile) else found


def find_files(paths: Iterable[str | os.PathLike], *, root: str | os.PathLike | None = None
               ) -> list[SourceFile | FileProblem]:
    """The files that ``paths`` name, sorted within each argument, with a problem for an argument that
    names nothing, an explicit file of an unsupported type, or an id already taken."""
    base = _absolute(root) if root is not None else None
    found: list[SourceFile | FileProblem] = []
    taken: dict[str, Path] = {}
    for argument in paths:
        for item in _expand(os.fspath(argument), base):
            owner = taken.get(item.id) if isinstance(item, SourceFile) else None
            if isinstance(item, FileProblem):
                found.append(item)
            elif owner is None:
                taken[item.id] = item.path
                found.append(item)
            elif owner != item.path:
                found.append(FileProblem(str(item.path), f"its id {item.id!r} is already taken by {owner}"))
            # else: the same file named twice, read once
    return found


def read_file(source: SourceFile) -> FileDocument | FileProblem:
    """``source`` extracted, or why it could not be: a broken file never stops the others."""
    try:
        data = source.path.read_bytes()
        stat = source.path.stat()
        text, title = _EXTRACTORS[source.format](data, source)
    except Exception as error:  # noqa: BLE001 — any failure of one file is reported, never raised
        return FileProblem(str(source.path), _one_line(error))
    modified = datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return FileDocument(source.id, text, title or source.path.stem, source.path.as_posix(), modified,
                        hashlib.sha256(data).hexdigest(), source.format)


def content_hash(path: str | os.PathLike) -> str:
    """The :attr:`FileDocument.content_hash` of a file without extracting it: how an ingest tells an
    unchanged file before paying for its PDF parse."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _expand(argument: str, base: Path | None) -> Iterator[SourceFile | FileProblem]:
    if _GLOB_CHARACTERS & set(argument):
        matches = sorted(glob.glob(argument, recursive=True))
        if not matches:
            yield FileProblem(argument, "no file matches this pattern")
        anchor = _glob_anchor(argument)
        for match in matches:
            yield from _expand_path(Path(match), base or anchor, explicit=False)
        return
    path = Path(argument)
    if not path.exists():
        yield FileProblem(argument, "no such file or folder")
        return
    yield from _expand_path(path, base or (_absolute(path) if path.is_dir() else _absolute(path).parent), explicit=True)


def _expand_path(path: Path, base: Path, *, explicit: bool) -> Iterator[SourceFile | FileProblem]:
    """``path`` itself when a file, else every supported file under it, sorted, hidden names skipped."""
    if path.is_dir():
        for folder, folders, files in os.walk(path):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES:
                    yield from _expand_path(Path(folder) / name, base, explicit=False)
        return
    absolute = _absolute(path)
    file_format = SUFFIXES.get(path.suffix.lower())
    if file_format is None:
        if explicit:
            yield FileProblem(str(path), f"unsupported file type {path.suffix!r} (supported: "
                                         f"{', '.join(sorted(suffix for suffix in SUFFIXES if suffix))}, none)")
        return
    if not absolute.is_relative_to(base):
        yield FileProblem(str(path), f"outside the root {base}: its id would not be a relative path")
        return
    yield SourceFile(absolute.relative_to(base).as_posix(), absolute, file_format)


def _glob_anchor(pattern: str) -> Path:
    """The folder a glob's matches are relative to: its leading components without glob characters."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if _GLOB_CHARACTERS & set(part):
            break
        fixed.append(part)
    return _absolute(Path(*fixed)) if fixed else _absolute(Path.cwd())


def _absolute(path: str | os.PathLike) -> Path:
    """Absolute and without ``..``, symbolic links kept: a linked file's id is where it sits in the folder."""
    return Path(os.path.abspath(path))


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {message}"


def _decode(data: bytes, source: SourceFile) -> str:
    """UTF-8 (a BOM is dropped); a suffixed text file that is not UTF-8 is read as Windows-1252, as browsers
    read unlabelled legacy text (a guess from a few hundred bytes is often a wrong code page)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if source.path.suffix == "":
            raise ValueError(f"not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}): "
                             f"a file with no suffix is read only when it is UTF-8") from None
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # five bytes cp1252 leaves undefined
        return data.decode("latin-1")


def _markdown(data: bytes, source: SourceFile) -> tuple[str, str]:
    from markdown_it import MarkdownIt

    text = _decode(data, source)
    tokens = MarkdownIt("commonmark").parse(text)
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open" and opening.tag == "h1":
            return text, " ".join(inline.content.split())
    return text, ""


def _text(data: bytes, source: SourceFile) -> tuple[str, str]:
    return _decode(data, source), ""


def _html(data: bytes, source: SourceFile) -> tuple[str, str]:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(data, "lxml")  # bytes: the parser reads the page's declared encoding
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")) is not None:
        title = h1.get_text(" ", strip=True)
    for element in soup(["head", "script", "style", "noscript", "template"]):
        element.decompose()
    body = soup.body or soup
    text = MarkdownConverter(heading_style="ATX", strip=["a", "img"]).convert_soup(body)
    return text.strip(), " ".join(title.split())


def _pdf(data: bytes, source: SourceFile) -> tuple[str, str]:
    from io import BytesIO

    from pypdf import PdfReader

    reader = PdfReader(BytesIO(data))  # lenient with the small faults real PDFs have; a truncated one still fails
    if reader.is_encrypted and not reader.decrypt(""):
        raise ValueError("encrypted PDF: it needs a password")
    pages = [page.extract_text() or "" for page in reader.pages]
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise ValueError(f"no text in its {len(pages)} page(s): a scanned PDF needs OCR first")
    title = str((reader.metadata or {}).get("/Title") or "").strip()
    return text, " ".join((title or text.lstrip().split("\n", 1)[0]).split())


_EXTRACTORS = {"markdown": _markdown, "text": _text, "html": _html, "pdf": _pdf}
