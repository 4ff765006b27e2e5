"""Input files cut into units of work, and the readers that read a unit's rows.

A unit is a fixed row range of one file. Units are planned up front from the
files themselves, so the same input always yields the same units: a unit is
what one parquet part holds and what a resumed job skips when it is done.
Readers are registered by format; a folder of image or audio files, or of
documents (Markdown, text, HTML, PDF), is read through a manifest of its files,
one row per file.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from rayprism.platform.errors import ConfigError
from rayprism.platform.files import write_atomically
from rayprism.platform.text.files import FILE_FIELDS, SUFFIXES, FileProblem, SourceFile, find_files, read_file


@dataclass(frozen=True)
class Unit:
    path: str
    start: int
    stop: int
    """Rows ``start <= row < stop`` of the file (0-based)."""

    @property
    def id(self) -> str:
        digest = hashlib.sha1(self.path.encode()).hexdigest()[:8]
        return f"{Path(self.path).stem}-{digest}-{self.start:010d}"

    def to_dict(self) -> dict:
        """The unit as a Ray Data row; :meth:`from_batch` reads such rows back."""
        return asdict(self)

    @classmethod
    def from_batch(cls, batch: dict) -> list[Unit]:
        """The units of a batch of :meth:`to_dict` rows, which Ray Data hands over as columns."""
        return [cls(str(path), int(start), int(stop))
                for path, start, stop in zip(batch["path"], batch["start"], batch["stop"])]


@dataclass(frozen=True)
class RawRow:
    row: int
    """0-based row (for JSONL and CSV: the data line) within the file."""
    record: dict | None
    error: str | None = None


@dataclass(frozen=True)
class Reader:
    count_rows: Callable[[str], int]
    read_rows: Callable[[str, int, int], Iterator[RawRow]]


def _jsonl_count(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def _jsonl_rows(path: str, start: int, stop: int) -> Iterator[RawRow]:
    with open(path, encoding="utf-8") as handle:
        for row, line in enumerate(handle):
            if row < start:
                continue
            if row >= stop:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield RawRow(row, None, f"not JSON: {error.msg} at column {error.colno}")
                continue
            yield RawRow(row, record) if isinstance(record, dict) else RawRow(row, None, "not a JSON object")


def _parquet_count(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _parquet_rows(path: str, start: int, stop: int) -> Iterator[RawRow]:
    yield from _table_rows(_batches_in_range(pq.ParquetFile(path).iter_batches(batch_size=4096), start, stop), start)


def _csv_options(path: str) -> pa_csv.ConvertOptions:
    """Everything read as text but empty cells as null: ids like 007 and free text stay as written."""
    with open(path, "rb") as handle:
        header = pa_csv.open_csv(handle).schema.names
    return pa_csv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=True)


def _csv_count(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(batch.num_rows for batch in pa_csv.open_csv(handle, convert_options=_csv_options(path)))


def _csv_rows(path: str, start: int, stop: int) -> Iterator[RawRow]:
    with open(path, "rb") as handle:
        batches = pa_csv.open_csv(handle, convert_options=_csv_options(path))
        yield from _table_rows(_batches_in_range(batches, start, stop), start)


def _batches_in_range(batches, start: int, stop: int) -> Iterator[pa.RecordBatch]:
    offset = 0
    for batch in batches:
        low, high = max(start - offset, 0), min(stop - offset, batch.num_rows)
        if low < high:
            yield batch.slice(low, high - low)
        offset += batch.num_rows
        if offset >= stop:
            return


def _table_rows(batches: Iterator[pa.RecordBatch], start: int) -> Iterator[RawRow]:
    row = start
    for batch in batches:
        for record in batch.to_pylist():
            yield RawRow(row, record)
            row += 1


# --- folders of images or audio files: one file, one row -------------------------------
#
# Planning lists the files once, sorted, into a manifest in the job's state directory; units are
# row ranges of that manifest, so every actor reads exactly the files that were planned, and it
# reads the bytes itself (they never pass through the driver). A row's id is the file's path
# relative to the input's root; an optional sidecar jsonl adds fields to rows by that id.

MEDIA_SUFFIXES = {
    "images": (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg", ".mp3"),
}
MANIFEST = "_media_files.json"


def media_files(pattern: str, form: str) -> tuple[Path, list[str]]:
    """(root, files): every file of the format's suffixes under a directory, or matching a glob."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        root, candidates = path, path.rglob("*")
    else:
        root = Path(glob.escape(pattern).split("*")[0] or ".").expanduser()
        root = root if root.is_dir() else root.parent
        candidates = (Path(p) for p in glob.glob(str(path), recursive=True))
    files = sorted(str(p.resolve()) for p in candidates
                   if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES[form] and not p.name.startswith((".", "_")))
    if not files:
        raise ConfigError(f"input.path {pattern!r} holds no {form} files ({', '.join(MEDIA_SUFFIXES[form])})")
    return root.resolve(), files


def write_manifest(directory: Path, root: Path, files: list[str], field: str, sidecar: str | None) -> str:
    """The planned files, where every actor reads them; returns the manifest's path (a unit's ``path``)."""
    manifest = directory / MANIFEST
    write_atomically(manifest, json.dumps({"root": str(root), "files": files, "field": field,
                                           "sidecar": sidecar}).encode())
    return str(manifest)


@functools.lru_cache(maxsize=4)
def _manifest(path: str) -> dict:
    manifest = json.loads(Path(path).read_text())
    manifest["fields"] = _sidecar(manifest["sidecar"]) if manifest["sidecar"] else {}
    return manifest


def _sidecar(path: str) -> dict[str, dict]:
    """Fields by item id; a line without an ``id`` is a mistake worth stopping for."""
    fields: dict[str, dict] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict) or "id" not in record:
                    raise ConfigError(f"input.sidecar {path}:{number}: every line needs an id (the item's path)")
                fields[str(record.pop("id"))] = record
    return fields


def _media_count(path: str) -> int:
    return len(_manifest(path)["files"])


def _media_rows(path: str, start: int, stop: int) -> Iterator[RawRow]:
    manifest = _manifest(path)
    root = Path(manifest["root"])
    for row, file in enumerate(manifest["files"][start:stop], start=start):
        item_id = str(Path(file).relative_to(root))
        try:
            data = Path(file).read_bytes()
        except OSError as error:
            yield RawRow(row, {"id": item_id}, f"cannot read {item_id}: {error.strerror}")
            continue
        yield RawRow(row, {**manifest["fields"].get(item_id, {}), "id": item_id, manifest["field"]: data})


# --- folders of documents (Markdown, text, HTML, PDF): one file, one row ------------------
#
# As for media folders, planning lists the files into a manifest (with their ids and how each is read)
# and units are row ranges of it; an actor extracts its files' text itself. A file that cannot be read
# is a bad row whose reason starts with the file's path.

FILES_MANIFEST = "_document_files.json"


def document_files(pattern: str) -> list[SourceFile]:
    """The documents a file, folder (recursively) or glob names (:func:`~rayprism.platform.text.files.find_files`)."""
    found = find_files([Path(pattern).expanduser()])
    problems = [item for item in found if isinstance(item, FileProblem)]
    if problems:
        raise ConfigError(f"input.path: {problems[0]}")
    if not found:
        raise ConfigError(f"input.path {pattern!r} holds no documents ({', '.join(sorted(s for s in SUFFIXES if s))})")
    return found


def write_files_manifest(directory: Path, files: list[SourceFile], text_field: str) -> str:
    """The planned documents, where every actor reads them; returns the manifest's path (a unit's ``path``)."""
    manifest = directory / FILES_MANIFEST
    listed = [[source.id, str(source.path), source.format] for source in files]
    write_atomically(manifest, json.dumps({"files": listed, "text_field": text_field}).encode())
    return str(manifest)


@functools.lru_cache(maxsize=4)
def _files_manifest(path: str) -> dict:
    return json.loads(Path(path).read_text())


def _files_count(path: str) -> int:
    return len(_files_manifest(path)["files"])


def _files_rows(path: str, start: int, stop: int) -> Iterator[RawRow]:
    manifest = _files_manifest(path)
    for row, (file_id, file, file_format) in enumerate(manifest["files"][start:stop], start=start):
        document = read_file(SourceFile(file_id, Path(file), file_format))
        if isinstance(document, FileProblem):
            yield RawRow(row, {"id": file_id}, str(document))
            continue
        yield RawRow(row, document.record(manifest["text_field"], FILE_FIELDS))


READERS: dict[str, Reader] = {
    "jsonl": Reader(_jsonl_count, _jsonl_rows),
    "parquet": Reader(_parquet_count, _parquet_rows),
    "csv": Reader(_csv_count, _csv_rows),
    "images": Reader(_media_count, _media_rows),
    "audio": Reader(_media_count, _media_rows),
    "files": Reader(_files_count, _files_rows),
}


def input_files(pattern: str) -> list[str]:
    """The files a path, directory or glob names, sorted, as absolute paths."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))]
    else:
        files = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    if not files:
        raise ConfigError(f"input.path {pattern!r} matches no files")
    return sorted(str(p.resolve()) for p in files)


def plan_units(files: list[str], input_format: str, rows_per_part: int) -> list[Unit]:
    reader = READERS[input_format]
    units = []
    for path in files:
        rows = reader.count_rows(path)
        units.extend(Unit(path, start, min(start + rows_per_part, rows)) for start in range(0, rows, rows_per_part))
    return units


def read_unit(unit: Unit, input_format: str) -> Iterator[RawRow]:
    return READERS[input_format].read_rows(unit.path, unit.start, unit.stop)


def file_signature(path: str) -> dict[str, Any]:
    """What identifies an input file's contents for resuming: size and modification time."""
    stat = Path(path).stat()
    return {"path": path, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
