"""The store's side of a backup: a consistent snapshot of one collection in a spool file, read back by page.

A snapshot is taken with the collection's writes held (:meth:`ReembedLedger._hold_writes`): new writes wait,
those under way end first, and the store pages every row into a parquet file beside the store; then writes
go on. So each write is wholly in the snapshot or wholly out of it, while searches (and other collections'
writes) never wait. Writes are held only while the store copies rows into a local file (a few seconds for
10,000 documents), not while a client far away downloads them: the client then reads the file page by
page (:meth:`SnapshotSpools.snapshot_page`), at its own pace. A Milvus server would let reads pin a
timestamp instead, but Milvus Lite has no such reads, and one way for both keeps restores between them equal.

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
from typing import Any

from rayprism.platform.config import CollectionConfig, is_lite_uri
from rayprism.platform.errors import NotFoundError, NotReadyError
from rayprism.platform.store.snapshots import page_count, read_page, stored_columns, write_snapshot

HOLD_MAX_S = 300.0
"""The longest writes to one collection are held for a snapshot: past it they go on and the snapshot is refused."""
SPOOL_TTL_S = 3600.0
"""How long a snapshot's spool file is kept for its client."""
SNAPSHOT_ID = re.compile(r"snap_[0-9a-f]{32}")


def spool_directory(uri: str) -> Path:
    return Path(f"{uri}.snapshots") if is_lite_uri(uri) else Path("data", "snapshots").resolve()


def _expire(directory: Path) -> None:
    for path in directory.glob("snap_*"):
        if time.time() - path.stat().st_mtime > SPOOL_TTL_S:
            path.unlink(missing_ok=True)


class SnapshotSpools:
    """Mixed into :class:`~rayprism.deployments.store.StoreReplica`, which provides the store (``_at``,
    ``_resolve``, ``_alias_table``) and the write holds (``_held``, ``_released``)."""

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
        path = directory / f"{snapshot_id}.parquet"
        physical = await self._held(name, HOLD_MAX_S)
        try:
            taken = await asyncio.to_thread(self._dump, physical, path, page_rows)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            held = await self._released(physical)
        if not held:
            path.unlink(missing_ok=True)
            raise NotReadyError(f"writes to {physical!r} could not be held for the {HOLD_MAX_S:g} s the snapshot "
                                "took: retry when writes are fewer")
        return {"object": "snapshot", "id": snapshot_id, **taken}

    def _dump(self, physical: str, path: Path, page_rows: int) -> dict[str, Any]:
        config: CollectionConfig = self._resolve(physical)
        store, physical = self._at(physical)
        layout = store.layout(physical)
        tokens = store.tokens.load(physical) if layout.multivector and store.tokens is not None else None
        created = time.time()
        rows = write_snapshot(store.row_pages(physical, stored_columns(config), page_rows), config, layout.dimensions,
                              path, tokens)
        return {"collection": physical, "config": config.model_dump(mode="json", exclude={"uri"}),
                "dimensions": layout.dimensions, "rows": rows, "documents": store.count(physical),
                "pages": page_count(path), "aliases": sorted(alias for alias, target in self._alias_table().items()
                                                              if target == physical),
                "created": created}

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

