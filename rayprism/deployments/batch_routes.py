"""The OpenAI Batch API for embeddings: ``/v1/files`` and ``/v1/batches`` in OpenAI's shapes, so the official
``openai`` client's ``files.create``, ``batches.create``, ``batches.retrieve``, ``batches.list``,
``batches.cancel``, ``files.content``, ``files.list`` and ``files.delete`` work unchanged.

The routes keep files and batch records in ``batches.dir`` (:mod:`rayprism.platform.batches`) and start each
batch's job (:mod:`rayprism.jobs.batches`) through the launcher that ``rayprism serve`` and the cluster's
application (:mod:`rayprism.application`) give the replicas; the job sends the batch's lines back to the
serving replicas (:meth:`EmbeddingService.batch_lines`), behind online requests.
"""

from __future__ import annotations

import asyncio
import logging
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Literal, Protocol

from fastapi import FastAPI, Query, Request
from starlette.responses import FileResponse, Response

from rayprism.deployments.collection_routes import Change
from rayprism.deployments.http_io import json_response, read_body
from rayprism.deployments.openapi import CALLER_ERRORS, answers, request_body
from rayprism.deployments.service import EmbeddingService
from rayprism.platform.api.requests import parse_body
from rayprism.platform.batches import (
    Batch,
    BatchList,
    BatchRequest,
    BatchStore,
    FileDeleted,
    FileList,
    FileObject,
    check_upload,
)
from rayprism.platform.config import BatchesConfig
from rayprism.platform.errors import InvalidInputError

logger = logging.getLogger(__name__)

MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Room in an upload's body for its multipart framing and form fields, beyond the file itself."""
LIST_MAX = 100
"""The most batches one page lists (OpenAI's limit)."""
FILES_LIST_MAX = 10_000
"""The most files one page lists (OpenAI's limit, and its default)."""


class BatchLauncher(Protocol):
    """Starts a batch's job (:class:`rayprism.jobs.batches.BatchJobs`) unless it runs already."""

    def start(self, root: str, batch_id: str, settings: BatchesConfig) -> None: ...


class BatchService:
    """Files and batches as the routes see them, and the jobs that run the batches."""

    def __init__(self, settings: BatchesConfig, launcher: BatchLauncher | None):
        """``launcher``: none where the application was built without one (this service then takes files but
        runs no batches)."""
        self.settings = settings
        self.root = str(Path(settings.dir).expanduser().resolve())
        self.store = BatchStore(self.root)
        self._launcher = launcher

    def _launch(self, batch_id: str) -> None:
        self._launcher.start(self.root, batch_id, self.settings)

    async def create(self, request: BatchRequest) -> Batch:
        if self._launcher is None:
            raise InvalidInputError("this service runs no batch jobs: its application was built without them "
                                    "(`rayprism serve` and rayprism.application:app_builder build it with them)")
        batch = await asyncio.to_thread(self.store.create, request)
        await asyncio.to_thread(self._launch, batch.id)
        return batch

    async def resume(self) -> list[str]:
        """Start again the jobs of the batches a stopped service left unfinished; returns their ids."""
        if self._launcher is None:
            return []
        unfinished = await asyncio.to_thread(self.store.unfinished)
        for batch_id in unfinished:
            await asyncio.to_thread(self._launch, batch_id)
        return unfinished

    async def upload(self, content_type: str, body: bytes) -> FileObject:
        fields = await asyncio.to_thread(form_fields, content_type, body)
        if "file" not in fields:
            raise InvalidInputError("the form has no 'file' field (multipart/form-data with 'file' and 'purpose')",
                                    param="file")
        filename, content = fields["file"]
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        check_upload(content, purpose, max_bytes=self.settings.max_file_bytes, max_lines=self.settings.max_lines)
        return await asyncio.to_thread(self.store.files.add, filename or "upload.jsonl", "batch", content)


def form_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A ``multipart/form-data`` body's fields by name: (file name, bytes), read by the standard library's MIME
    parser (python-multipart, which Starlette's own form parsing needs, is not among rayprism's dependencies)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidInputError(f"upload a file as multipart/form-data (fields 'file' and 'purpose'), not "
                                f"{content_type or 'a body without Content-Type'}")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    if not message.is_multipart() or message.defects:
        raise InvalidInputError("the multipart/form-data body is malformed")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def add_batch_routes(app: FastAPI, service: EmbeddingService, batches: BatchService, change: Change) -> None:
    """``change``: audits one change (``collection_routes``'s): a batch created or cancelled."""
    body_limit = service.config.server.max_request_bytes
    upload_limit = batches.settings.max_file_bytes + MULTIPART_OVERHEAD_BYTES
    store = batches.store

    @app.post("/v1/files", responses=answers(FileObject, errors=CALLER_ERRORS),
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file", "purpose"], "properties": {
                      "file": {"type": "string", "format": "binary"}, "purpose": {"type": "string", "enum": ["batch"]}},
              }}}}})
    async def upload_file(request: Request) -> Response:
        """Upload a batch's input: JSONL, one `/v1/embeddings` request per line, as
        `{"custom_id", "method": "POST", "url": "/v1/embeddings", "body": {...}}` (purpose `batch`)."""
        body = await read_body(request, upload_limit)
        uploaded = await batches.upload(request.headers.get("content-type", ""), body)
        return json_response(uploaded.model_dump())

    @app.get("/v1/files", responses=answers(FileList, errors=CALLER_ERRORS))
    async def list_files(limit: int = Query(FILES_LIST_MAX, ge=1, le=FILES_LIST_MAX), after: str | None = None,
                         order: Literal["asc", "desc"] = "desc", purpose: str | None = None) -> Response:
        """Files (uploads and batches' output and error files) by creation time, newest first unless
        `order=asc`; only those of `purpose` if given; `limit` of them after the file `after`."""
        return json_response((await asyncio.to_thread(store.files.page, limit, after, order, purpose)).model_dump())

    @app.delete("/v1/files/{file_id}", responses=answers(FileDeleted, errors={
        **CALLER_ERRORS, 409: "An unfinished batch reads the file: cancel it or wait until it ends"}))
    async def delete_file(file_id: str, request: Request) -> Response:
        """Delete a file and its bytes; refused (409) while an unfinished batch reads it."""
        with change(request, file_id):
            return json_response((await asyncio.to_thread(store.delete_file, file_id)).model_dump())

    @app.get("/v1/files/{file_id}", responses=answers(FileObject, errors=CALLER_ERRORS))
    async def get_file(file_id: str) -> Response:
        """A file's record: an upload, or a batch's output or error file."""
        return json_response((await asyncio.to_thread(store.files.get, file_id)).model_dump())

    @app.get("/v1/files/{file_id}/content", response_class=Response, responses={
        **answers(None, description="The file's bytes (JSONL)", errors=CALLER_ERRORS),
        200: {"description": "The file's bytes (JSONL)", "content": {"application/jsonl": {"schema": {
            "type": "string", "format": "binary"}}}}})
    async def file_content(file_id: str) -> Response:
        """A file's bytes: a batch's output lines (`{"id", "custom_id", "response": {"status_code", "request_id",
        "body"}, "error"}`), or its error lines."""
        path = await asyncio.to_thread(store.files.content_path, file_id)
        return FileResponse(path, media_type="application/jsonl")

    @app.post("/v1/batches", responses=answers(Batch), openapi_extra=request_body(BatchRequest))
    async def create_batch(request: Request) -> Response:
        """Embed every line of an uploaded file as a Ray Data job on the service's models, behind online requests;
        the batch resumes where it was if the service restarts."""
        with change(request, None) as details:
            parsed = parse_body(BatchRequest, await read_body(request, body_limit))
            details["input_file_id"] = parsed.input_file_id
            batch = await batches.create(parsed)
            details["target"] = batch.id
            return json_response(batch.model_dump())

    @app.get("/v1/batches/{batch_id}", responses=answers(Batch, errors=CALLER_ERRORS))
    async def get_batch(batch_id: str) -> Response:
        """A batch: its status, counts of lines done and failed, and its output and error files once it ends."""
        return json_response((await asyncio.to_thread(store.get, batch_id)).model_dump())

    @app.get("/v1/batches", responses=answers(BatchList, errors=CALLER_ERRORS))
    async def list_batches(limit: int = Query(20, ge=1, le=LIST_MAX), after: str | None = None) -> Response:
        """Batches, newest first: `limit` of them (at most 100), after the batch `after`."""
        return json_response((await asyncio.to_thread(store.page, limit, after)).model_dump())

    @app.post("/v1/batches/{batch_id}/cancel", responses=answers(Batch, errors=CALLER_ERRORS))
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        """Cancel a batch: it is `cancelling` until its job stops (after the units in flight), then `cancelled`,
        with the lines done so far in its output file."""
        with change(request, batch_id):
            return json_response((await asyncio.to_thread(store.cancel, batch_id)).model_dump())
