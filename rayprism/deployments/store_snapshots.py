"""The store's side of a backup: a consistent snapshot of one collection in a spool file, read back by page.

A snapshot is one moment between writes, taken in three steps. (1) The store starts noting the documents
each write to the collection touches (:meth:`ReembedLedger._watch_writes`) and pages every row into a local
parquet file while writes go on: a row may be read before or after a write that changes it. (2) It holds
new writes back (:meth:`ReembedLedger._hold_writes`: they wait, those under way end first) and reads the
noted documents again; then writes go on. (3) The rows read in (1) of noted documents are replaced by
those read in (2). Every document that no write touched during (1) was read as it is at (2), and every one
that a write touched is read at (2): the snapshot is the collection at (2), each write wholly in it or out
of it. Writes wait only for (2), a re-read of the documents written meanwhile (10,000 documents take
Milvus Lite about 14 s to page out, which writes would otherwise wait for); searches and other collections'
writes never wait. The client then reads the spool file page by page
(:meth:`SnapshotSpools.snapshot_page`), at its own pace. A Milvus server would let reads pin a timestamp
instead, but Milvus Lite has no such reads (nor do the token vectors kept beside a Lite file), and one way
for both keeps backups restorable on either.

Spool files live in ``<store.uri>.snapshots/`` (Lite) or ``./data/snapshots/`` (a server) and are removed
by the client when it has read them, or at the next snapshot once older than :data:`SPOOL_TTL_S`. With
several store replicas, a page may be read by any replica on the node that holds ``./data``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import pyarrow as pa

from rayprism.platform.config import CollectionConfig, is_lite_uri
from rayprism.platform.errors import NotFoundError, NotReadyError
from rayprism.platform.store.snapshots import (
    arrow_schema,
    merge_changes,
    page_count,
    read_page,
    stored_columns,
    table_of,
    write_snapshot,
)

HOLD_MAX_S = 300.0
"""The longest writes to one collection are held for a snapshot: past it they go on and the snapshot is refused."""
SPOOL_TTL_S = 3600.0
"""How long a snapshot's spool file is kept for its client."""
SNAPSHOT_ID = re.compile(r"snap_[0-9a-f]{32}")


def with_int8_ranges(config: CollectionConfig, ranges: list | None) -> CollectionConfig:
    """``config`` with the int8 buckets its tier encodes with now: a restore then encodes every vector to the code
    it had (calibrating again on the first rows restored would move every bucket)."""
    if ranges is None:
        return config
    return config.model_copy(update={"compression": config.compression.model_copy(update={"int8_ranges": ranges})})


def spool_directory(uri: str) -> Path:
    return Path(f"{uri}.snapshots") if is_lite_uri(uri) else Path("data", "snapshots").resolve()


def _expire(directory: Path) -> None:
    for path in directory.glob("snap_*"):
        if time.time() - path.stat().st_mtime > SPOOL_TTL_S:
            path.unlink(missing_ok=True)


class SnapshotSpools:
    """Mixed into :class:`~rayprism.deployments.store.StoreReplica`, which provides the store (``_at``,
    ``_resolve``, ``aliases``) and the watch and hold of writes (``_watched``, ``_held``, ``_released``,
    ``_unwatched``)."""

    def _spool(self, snapshot_id: str) -> Path:
        if not SNAPSHOT_ID.fullmatch(snapshot_id):
            raise NotFoundError(f"snapshot {snapshot_id!r} does not exist")
        path = spool_directory(self._config.uri) / f"{snapshot_id}.parquet"
        if not path.exists():
            raise NotFoundError(f"snapshot {snapshot_id!r} does not exist (read, dropped or expired)")
        return path

    async def snapshot(self, name: str, page_rows: int) -> dict:
        """Every stored row of the collection ``name`` reaches, as of one moment between writes, into a spool
        file of pages of ``page_rows``; answers what it holds (``Snapshot`` in the API's responses)."""
        directory = spool_directory(self._config.uri)
        directory.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_expire, directory)
        snapshot_id = f"snap_{uuid.uuid4().hex}"
        path, base = directory / f"{snapshot_id}.parquet", directory / f"{snapshot_id}.base"
        physical = await self._watched(name)
        try:
            config, dimensions = await asyncio.to_thread(self._read_all, physical, base, page_rows)
            changed = await self._held(physical, HOLD_MAX_S)
            try:
                again = await asyncio.to_thread(self._read_again, physical, config, dimensions, changed)
                created = time.time()
            finally:
                held = await self._released(physical)
            if not held:
                raise NotReadyError(f"writes to {physical!r} could not be held for the {HOLD_MAX_S:g} s the snapshot "
                                    "took: retry when writes are fewer")
            rows, documents = await asyncio.to_thread(merge_changes, base, changed, again, path, config, page_rows)
        except BaseException:
            path.unlink(missing_ok=True)
            await self._unwatched(physical)
            raise
        finally:
            base.unlink(missing_ok=True)
        table = await asyncio.to_thread(self._alias_table)
        aliases = sorted(alias for alias, target in table.items() if target == physical)
        return {"object": "snapshot", "id": snapshot_id, "collection": physical,
                "config": config.model_dump(mode="json", exclude={"uri"}), "dimensions": dimensions, "rows": rows,
                "documents": documents, "pages": await asyncio.to_thread(page_count, path), "aliases": aliases,
                "created": created}

    def _read_all(self, physical: str, base: Path, page_rows: int) -> tuple[CollectionConfig, int]:
        """Every row into ``base`` while writes go on (those made meanwhile are read again, held)."""
        config: CollectionConfig = self._resolve(physical)
        store, physical = self._at(physical)
        layout = store.layout(physical)
        tokens = store.tokens.load(physical) if layout.multivector and store.tokens is not None else None
        write_snapshot(store.row_pages(physical, stored_columns(config), page_rows), config, layout.dimensions, base,
                       tokens)
        ranges = store.int8_ranges(physical) if config.compression and config.compression.type == "int8" else None
        return with_int8_ranges(config, ranges), layout.dimensions

    def _read_again(self, physical: str, config: CollectionConfig, dimensions: int, changed: list) -> pa.Table:
        """The rows of the documents written since the snapshot began, as they are now (writes held)."""
        store, physical = self._at(physical)
        rows = store.stored_rows(physical, changed, stored_columns(config)) if changed else []
        tokens = store.tokens.load(physical) if rows and config.multivector and store.tokens is not None else None
        return table_of(rows, config, arrow_schema(config, dimensions), tokens)

    async def snapshot_page(self, snapshot_id: str, page: int) -> bytes:
        """Page ``page`` (from 0) of a snapshot, as an Arrow IPC stream."""
        path = self._spool(snapshot_id)
        pages = await asyncio.to_thread(page_count, path)
        if not 0 <= page < pages:
            raise NotFoundError(f"snapshot {snapshot_id!r} has {pages} pages; there is no page {page}")
        return await asyncio.to_thread(read_page, path, page)

    async def snapshot_drop(self, snapshot_id: str) -> None:
        """Remove a snapshot's spool file (its client has read it)."""
        (await asyncio.to_thread(self._spool, snapshot_id)).unlink(missing_ok=True)

