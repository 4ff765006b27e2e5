"""Backup and restore over HTTP (admin keys): a collection's snapshot read by page, and stored rows written back.

``rayprism backup`` asks for a snapshot (the store takes it with the collection's writes held for a moment,
:mod:`~rayprism.deployments.store_snapshots`), reads its pages as Arrow IPC streams into parquet on the
client's machine, and drops it. ``rayprism restore`` creates the collection from the backup's config with
the ordinary create route, then sends the rows a page at a time to the rows route, which writes them as
they were stored: vectors included, nothing embedded.
"""

from __future__ import annotations

import asyncio
from typing import Callable, ContextManager

from fastapi import FastAPI, Request
from starlette.responses import Response

from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.http_io import LARGE_BODY_BYTES, Observed, json_response, read_body
from rayprism.deployments.openapi import CALLER_ERRORS, RETRY_LATER, answers, request_body
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store_client import Store
from rayprism.platform.api import responses
from rayprism.platform.api.requests import SnapshotRequest, parse_body
from rayprism.platform.constants import ARROW_STREAM
from rayprism.platform.store.snapshots import from_ipc, rows_of

ARROW_CONTENT = {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}


def add_backup_routes(app: FastAPI, service: EmbeddingService, collections: CollectionsService, store: Store,
                      change: Callable[[Request, str | None], ContextManager[dict]]) -> None:
    """``change``: audits one change (``collection_routes``'s): a restore's rows are one, a snapshot is a read."""
    body_limit = service.config.server.max_request_bytes

    @app.post("/v1/collections/{name}/snapshots", status_code=201,
              openapi_extra=request_body(SnapshotRequest, required=False), responses=answers(
                  responses.Snapshot, status=201, description="Taken", errors={
                      **CALLER_ERRORS, 409: "Another snapshot of this collection is being taken", **RETRY_LATER}))
    async def take_snapshot(name: str, request: Request) -> Response:
        """Snapshot a collection for a backup: every stored row (vectors, text, fields; a chunked collection's
        pieces; a multi-vector collection's token vectors) as of one moment between writes. New writes to it
        wait while the store copies its rows aside (searches do not); each write is wholly in or out. The body
        may be left out."""
        with Observed(service, "collections.snapshot", lambda: service.metrics_label(collections.model_of(name))):
            body = await read_body(request, body_limit)
            parsed = parse_body(SnapshotRequest, body) if body.strip() else SnapshotRequest()
            return json_response(await store.snapshot(name, parsed.page_rows), 201)

    @app.get("/v1/snapshots/{snapshot_id}/pages/{page}", response_class=Response, responses={
        **answers(None, description="The page's rows, an Arrow IPC stream", errors=CALLER_ERRORS),
        200: {"description": "The page's rows, an Arrow IPC stream", "content": ARROW_CONTENT}})
    async def snapshot_page(snapshot_id: str, page: int) -> Response:
        """One page of a snapshot (pages count from 0; the snapshot says how many there are)."""
        return Response(await store.snapshot_page(snapshot_id, page), media_type=ARROW_STREAM)

    @app.delete("/v1/snapshots/{snapshot_id}", responses=answers(responses.SnapshotDeleted, errors=CALLER_ERRORS))
    async def drop_snapshot(snapshot_id: str) -> Response:
        """Remove a snapshot once read (one left is removed an hour after it was taken)."""
        await store.snapshot_drop(snapshot_id)
        return json_response(responses.SnapshotDeleted(object="snapshot.deleted", id=snapshot_id, deleted=True))

    @app.post("/v1/collections/{name}/rows", openapi_extra={"requestBody": {"required": True, "content": ARROW_CONTENT}},
              responses=answers(responses.RowsRestored))
    async def restore_rows(name: str, request: Request) -> Response:
        """Write rows as a snapshot holds them (an Arrow IPC stream of a snapshot page's columns) into a
        collection made from the backup's config: stored as they are, nothing embedded."""
        with (Observed(service, "collections.restore", lambda: service.metrics_label(collections.model_of(name))),
              change(request, name) as details):
            body = await read_body(request, body_limit)
            config = await collections.collection(name)
            dimensions = (await store.describe(config.name))["dimensions"]

            def parsed() -> list[dict]:
                return rows_of(from_ipc(body), config, dimensions)

            rows = await asyncio.to_thread(parsed) if len(body) > LARGE_BODY_BYTES else parsed()
            details["count"] = len(rows)
            restored = details["restored"] = await store.upsert(config.name, rows, name) if rows else 0
            return json_response(responses.RowsRestored(object="rows.restored", collection=name, restored=restored))
