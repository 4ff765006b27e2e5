"""Reading a Milvus Lite collection's rows back (for its in-memory mirror, a backup, a long document's pieces) in
time linear in the rows.

Milvus Lite 3.x answers every query that is not a lookup by primary keys by first assembling the whole
collection (every key, one concatenated copy of every vector, a record reference per row) and, for a query
iterator's page, sorting the keys that match ``id > last``: each page costs O(N), so reading N rows in pages
costs O(N²) (500k rows took 29 minutes here; docs/capacity.md). A lookup by keys (``id in [...]``) takes
Lite's point-read path instead, O(keys asked). So a build lists the keys in one query and reads the rows by
key, a page at a time, each page's float vectors decoded as one float32 array (``strict_float32``).

Both take ``query``, a callable with :meth:`MilvusClient.query`'s signature (the client's own, or the store's
wrapped one that turns Milvus failures into rayprism's errors).
"""

from __future__ import annotations

from typing import Callable, Iterator

from rayprism.platform.store.filters import ids_filter

PAGE_ROWS = 4096
"""Rows read per lookup: a page of 384-d float vectors is 6 MiB in one gRPC message."""


Query = Callable[..., list[dict]]
"""``MilvusClient.query`` or a wrapper of it."""


def collection_keys(query: Query, name: str, filter: str = "") -> list:
    """Every primary key of the collection (of its rows matching ``filter``), in key order (the mirror's rows
    follow it): one query, no limit (Lite answers every row)."""
    return sorted(row["id"] for row in query(name, filter=filter, output_fields=["id"]))


def rows_by_key(query: Query, name: str, keys: list, output_fields: list[str],
                page_rows: int = PAGE_ROWS) -> Iterator[list[dict]]:
    """The rows of ``keys`` that still exist, ``page_rows`` at a time, in the order of ``keys``: ``id`` and
    ``output_fields``, float vectors as float32 arrays."""
    fields = output_fields or ["id"]  # an empty list reads every field
    for start in range(0, len(keys), page_rows):
        yield query(name, filter=ids_filter(keys[start : start + page_rows]), output_fields=fields,
                    strict_float32=True)
