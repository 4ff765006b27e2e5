"""Input files cut into units of work, and the readers that read a unit's rows.

A unit is a fixed row range of one file. Units are planned up front from the
files themselves, so the same input always yields the same units: a unit is
what one parquet part holds and what a resumed job skips when it is done.
Readers are registered by format; image and audio folders plug in the same way.
"""

from __future__ import annotations

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
        return asdict(self)


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


READERS: dict[str, Reader] = {
    "jsonl": Reader(_jsonl_count, _jsonl_rows),
    "parquet": Reader(_parquet_count, _parquet_rows),
    "csv": Reader(_csv_count, _csv_rows),
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
