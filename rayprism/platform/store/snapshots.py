"""A collection's stored rows as Arrow tables: what a backup holds, and what a restore writes back.

A snapshot holds every stored field of every row (a chunked collection's rows are its pieces, with their
piece fields) and a multi-vector collection's token vectors (kept beside a Lite file, not in Milvus), but
nothing Milvus derives on write: the BM25 ``sparse`` vector (from the text) and a server's binary codes
(from the dense vector) are made again when the rows are written back, so a restore embeds nothing and a
snapshot of a Lite collection restores on a server and back. The Arrow schema is built from the
collection's config, never inferred from the rows, so every page of one collection has the same columns.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rayprism.platform.config import (
    DENSE_FIELD,
    DOCUMENT_HASH_FIELD,
    DOCUMENT_ID_FIELD,
    PIECE_FIELDS,
    PIECE_INDEX_FIELD,
    CollectionConfig,
)
from rayprism.platform.constants import ARROW_STREAM
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.store.tokens import TOKENS_KEY

_FIELD_TYPES = {"varchar": pa.string(), "int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_(),
                "json": pa.string()}
"""A metadata field's column type (a JSON field as its JSON text: parquet has no "any" type)."""


def stored_columns(config: CollectionConfig) -> list[str]:
    """The Milvus fields a snapshot reads: all but those Milvus derives (``sparse``, a server's bits)."""
    pieces = list(PIECE_FIELDS) if config.chunking else []
    return ["id", *pieces, config.text_field, DENSE_FIELD, *config.fields]


def arrow_schema(config: CollectionConfig, dimensions: int) -> pa.Schema:
    """The columns of a snapshot of a collection made from ``config`` whose dense vectors have ``dimensions``."""
    document_id = pa.string() if config.id_type == "varchar" else pa.int64()
    columns = [pa.field("id", pa.string() if config.chunking else document_id, nullable=False)]
    if config.chunking:
        columns.append(pa.field(DOCUMENT_ID_FIELD, document_id, nullable=False))
        columns += [pa.field(name, pa.string() if name == DOCUMENT_HASH_FIELD else pa.int64())
                    for name in PIECE_FIELDS if name != DOCUMENT_ID_FIELD]
    columns += [pa.field(config.text_field, pa.string()),
                pa.field(DENSE_FIELD, pa.list_(pa.float32(), dimensions), nullable=False)]
    columns += [pa.field(name, _FIELD_TYPES[kind]) for name, kind in config.fields.items()]
    if config.multivector:
        columns.append(pa.field(TOKENS_KEY, pa.list_(pa.list_(pa.float32()))))
    return pa.schema(columns)


def table_of(rows: list[dict], config: CollectionConfig, schema: pa.Schema, tokens: dict | None = None) -> pa.Table:
    """Rows as Milvus answers them as a table of ``schema``; ``tokens``: a multi-vector collection's matrices by id."""
    json_fields = {name for name, kind in config.fields.items() if kind == "json"}
    columns: dict[str, Any] = {}
    for field in schema:
        if field.name == TOKENS_KEY:
            values: list = [np.asarray((tokens or {}).get(row["id"], np.zeros((0, 0))), dtype=np.float32).tolist()
                            for row in rows]
        elif field.name == DENSE_FIELD:
            flat = np.asarray([row[DENSE_FIELD] for row in rows], dtype=np.float32).reshape(-1)
            columns[field.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), field.type.list_size)
            continue
        elif field.name in json_fields:
            values = [None if row.get(field.name) is None else json.dumps(row[field.name]) for row in rows]
        else:
            values = [row.get(field.name) for row in rows]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.table(columns, schema=schema)


def rows_of(table: pa.Table, config: CollectionConfig, dimensions: int) -> list[dict]:
    """A snapshot's rows as the store writes them. A table whose columns are not the collection's is refused
    with the differences: rows of another collection's backup would be written half (Milvus checks only types)."""
    expected = arrow_schema(config, dimensions)
    if not table.schema.equals(expected):
        found = {field.name: str(field.type) for field in table.schema}
        wanted = {field.name: str(field.type) for field in expected}
        differences = [f"{name}: expected {wanted.get(name, 'absent')}, got {found.get(name, 'absent')}"
                       for name in dict.fromkeys([*wanted, *found]) if wanted.get(name) != found.get(name)]
        raise InvalidInputError(f"the rows do not fit collection {config.name!r}: {'; '.join(differences)}"
                                " (a backup restores into a collection made from its own manifest's config)",
                                param="rows")
    json_fields = {name for name, kind in config.fields.items() if kind == "json"}
    dense = table.column(DENSE_FIELD).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    rows = table.drop_columns([DENSE_FIELD]).to_pylist()
    for index, row in enumerate(rows):
        row[DENSE_FIELD] = dense[index * dimensions : (index + 1) * dimensions]
        for name in json_fields:
            if row[name] is not None:
                row[name] = json.loads(row[name])
        if TOKENS_KEY in row:
            row[TOKENS_KEY] = np.asarray(row[TOKENS_KEY] or np.zeros((0, 0)), dtype=np.float32)
    return rows


def write_pages(pages: Iterator[pa.Table], path: Path, schema: pa.Schema) -> int:
    """``pages`` into one parquet file at ``path``, a row group each (a page is read back by its number);
    returns the rows written."""
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for page in pages:
            if page.num_rows:
                writer.write_table(page, row_group_size=page.num_rows)
                rows += page.num_rows
    return rows


def write_snapshot(row_pages: Iterator[list[dict]], config: CollectionConfig, dimensions: int, path: Path,
                   tokens: dict | None = None) -> int:
    """Rows as Milvus pages them (``MilvusStore.row_pages`` of :func:`stored_columns`) into a parquet file, a
    row group per page; ``tokens``: a multi-vector collection's token matrices by id. Returns the rows written."""
    schema = arrow_schema(config, dimensions)
    return write_pages((table_of(rows, config, schema, tokens) for rows in row_pages), path, schema)


def document_key(config: CollectionConfig) -> str:
    """The column that names a row's document: a chunked collection's pieces carry it in ``doc_id``."""
    return DOCUMENT_ID_FIELD if config.chunking else "id"


def merge_changes(base: Path, changed: list, again: pa.Table, path: Path, config: CollectionConfig,
                  page_rows: int) -> tuple[int, int]:
    """``base`` (rows read while writes went on) without the rows of the ``changed`` documents, then ``again``
    (those documents' rows read once writes were held), into ``path`` in pages of at most ``page_rows``.
    Returns (rows, documents) written."""
    source = pq.ParquetFile(base)
    key = document_key(config)
    stale = pa.array(changed, type=source.schema_arrow.field(key).type)
    kept = (source.read_row_group(group) for group in range(source.num_row_groups))
    if len(stale):
        kept = (page.filter(pc.invert(pc.is_in(page.column(key), value_set=stale))) for page in kept)
    rows = documents = 0
    with pq.ParquetWriter(path, source.schema_arrow) as writer:
        for page in itertools.chain(kept, [again]):
            for start in range(0, page.num_rows, page_rows):
                part = page.slice(start, page_rows)
                writer.write_table(part, row_group_size=page_rows)
                rows += part.num_rows
                openings = pc.sum(pc.equal(part.column(PIECE_INDEX_FIELD), 0)).as_py() if config.chunking else None
                documents += part.num_rows if openings is None else openings
    return rows, documents


def page_count(path: Path) -> int:
    return pq.ParquetFile(path).num_row_groups


def read_page(path: Path, page: int) -> bytes:
    """Row group ``page`` of the parquet file at ``path``, as an Arrow IPC stream."""
    return to_ipc(pq.ParquetFile(path).read_row_group(page))


def to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(body: bytes) -> pa.Table:
    """An Arrow IPC stream's table; anything else is the caller's mistake, said in one sentence."""
    try:
        with pa.ipc.open_stream(body) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidInputError(f"the body is not an Arrow IPC stream ({ARROW_STREAM}): {error}",
                                param="rows") from None
