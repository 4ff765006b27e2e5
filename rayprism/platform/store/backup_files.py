"""A backup on disk: parquet parts of a collection's rows and ``manifest.json``, which says what they are.

The manifest is written last, after every part and its checksum: a folder without one is a backup that did
not finish, and a restore refuses it (and any part whose bytes changed) before writing anything. Parts are
written and read a page at a time, so neither side holds a collection in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Iterator, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import ConflictError, InvalidInputError
from rayprism.platform.files import write_atomically

MANIFEST = "manifest.json"
FORMAT = "rayprism.backup"
VERSION = 1
"""The manifest's format version: a restore reads this version only and says so for another."""
ROWS_PER_PART = 100_000
"""Rows of one parquet part before the next part starts."""


class PartFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    """Relative to the backup folder."""
    rows: int
    bytes: int
    sha256: str


class Manifest(BaseModel):
    """What a backup holds. ``rows`` are stored rows (a chunked collection's pieces), ``documents`` its documents."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["rayprism.backup"] = FORMAT
    version: int = VERSION
    collection: str
    config: CollectionConfig
    """The collection's config as it was created (without ``uri``): a restore makes the collection from it."""
    dimensions: int
    rows: int
    documents: int
    aliases: list[str]
    """The aliases that reached the collection when the backup was taken."""
    columns: list[str]
    parts: list[PartFile]
    created: float
    """Unix time the snapshot was taken (writes were held for it)."""


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_free(directory: Path) -> None:
    """Refuse a folder that holds a finished backup (a backup never overwrites one)."""
    if (directory / MANIFEST).exists():
        raise ConflictError(f"{directory} holds a backup already: choose an empty folder")


class BackupWriter:
    """Pages of rows into ``part-NNNNN.parquet`` files of a new backup folder; :meth:`finish` writes the manifest."""

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_part: int = ROWS_PER_PART):
        check_free(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._schema = schema
        self._rows_per_part = rows_per_part
        self._writer: pq.ParquetWriter | None = None
        self._parts: list[tuple[Path, int]] = []

    def write(self, page: pa.Table) -> None:
        if self._writer is None or self._parts[-1][1] >= self._rows_per_part:
            self._close_part()
            path = self.directory / f"part-{len(self._parts):05d}.parquet"
            self._writer = pq.ParquetWriter(path, self._schema)
            self._parts.append((path, 0))
        self._writer.write_table(page)
        path, rows = self._parts[-1]
        self._parts[-1] = (path, rows + page.num_rows)

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self, *, collection: str, config: CollectionConfig, dimensions: int, documents: int,
               aliases: list[str], created: float | None = None) -> Manifest:
        self._close_part()
        parts = [PartFile(path=path.name, rows=rows, bytes=path.stat().st_size, sha256=_digest(path))
                 for path, rows in self._parts]
        manifest = Manifest(collection=collection, config=config, dimensions=dimensions,
                            rows=sum(part.rows for part in parts), documents=documents, aliases=aliases,
                            columns=self._schema.names, parts=parts, created=created or time.time())
        write_atomically(self.directory / MANIFEST, manifest.model_dump_json(indent=2).encode())
        return manifest


def read_manifest(directory: Path) -> Manifest:
    """The backup's manifest, or an error saying why the folder is not a backup this version reads."""
    path = directory / MANIFEST
    if not path.is_file():
        raise InvalidInputError(f"{directory} has no {MANIFEST}: not a backup, or one that did not finish")
    try:
        found = json.loads(path.read_bytes())
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{path} is not JSON: {error}") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise InvalidInputError(f"{path} is not a rayprism backup manifest")
    if found.get("version") != VERSION:
        raise InvalidInputError(f"{path} is format version {found.get('version')!r}; this rayprism reads {VERSION}")
    try:
        return Manifest.model_validate(found)
    except ValidationError as error:
        raise InvalidInputError(f"{path} is damaged: {error.errors()[0]['loc']}: {error.errors()[0]['msg']}") from None


def verify(directory: Path, manifest: Manifest) -> None:
    """Every part is there with the bytes the manifest says, or an error naming the first that is not."""
    for part in manifest.parts:
        path = directory / part.path
        if not path.is_file():
            raise InvalidInputError(f"{path} is missing from the backup")
        if path.stat().st_size != part.bytes or _digest(path) != part.sha256:
            raise InvalidInputError(f"{path} does not match its checksum in {MANIFEST}: the backup is damaged")


def read_pages(directory: Path, manifest: Manifest, page_rows: int) -> Iterator[pa.Table]:
    """The backup's rows, ``page_rows`` at a time, in the order they were written."""
    for part in manifest.parts:
        for batch in pq.ParquetFile(directory / part.path).iter_batches(batch_size=page_rows):
            yield pa.Table.from_batches([batch])
