"""The OpenAI Batch API's records and their home on disk, shared by the routes that take files and batches
(:mod:`rayprism.deployments.batch_routes`) and the Ray Data job that runs a batch (:mod:`rayprism.jobs.batches`).

Layout of ``batches.dir``::

    files/<file id>.json         the file's record (OpenAI's file object)
    files/<file id>.jsonl        its bytes
    batches/<batch id>/batch.json     the batch's record (OpenAI's batch object), written by its job only
    batches/<batch id>/cancel         present once a cancel was asked for (its time: ``cancelling_at``)
    batches/<batch id>/job/           the job's progress (:class:`~rayprism.jobs.state.JobState`): one record and
                                      one part of output lines per finished unit, so a restarted job redoes none

Every record is written whole (:func:`~rayprism.platform.files.write_atomically`), so a reader sees the old or
the new one.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from rayprism.platform.files import write_atomically

EMBEDDINGS_ENDPOINT = "/v1/embeddings"
"""The one endpoint a batch may name."""
COMPLETION_WINDOW = "24h"
"""The one completion window OpenAI takes, and so the one taken here."""
WINDOW_S = 24 * 3600

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]
FilePurpose = Literal["batch", "batch_output"]
UNFINISHED: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
"""Statuses of a batch whose job must run (again, after a restart) to end it."""

_FILE_ID = re.compile(r"file-[0-9a-f]{24}")
_BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class FileObject(BaseModel):
    """OpenAI's file object."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class Batch(BaseModel):
    """OpenAI's batch object: the record on disk and the body every batch route answers."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None


Listed = TypeVar("Listed", bound=BaseModel)


class ListPage(BaseModel, Generic[Listed]):
    """OpenAI's cursor page: ``limit`` records after the one named ``after``, in the list's order."""

    object: Literal["list"] = "list"
    data: list[Listed]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, records: list, limit: int, after: str | None) -> ListPage:
        if after is not None:
            ids = [record.id for record in records]
            if after not in ids:
                raise NotFoundError(f"no {after!r} in this list (the after parameter)", param="after")
            records = records[ids.index(after) + 1:]
        data = records[:limit]
        return cls(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                   has_more=len(records) > limit)


BatchList = ListPage[Batch]
FileList = ListPage[FileObject]


class FileDeleted(BaseModel):
    """OpenAI's answer to a file's deletion."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchRequest(BaseModel):
    """``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    input_file_id: str
    """A file uploaded with purpose ``batch``: one ``/v1/embeddings`` request per line."""
    endpoint: Literal["/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(None, max_length=16)
    """Up to 16 pairs, kept with the batch."""


# --- the lines of a batch ---------------------------------------------------------------------------------

def request_of(record: dict | None, parse_error: str | None) -> tuple[Any, dict] | str:
    """``(custom_id, body)`` of one input line, or why it cannot be run (for the error file)."""
    if parse_error is not None:
        return parse_error
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "custom_id must be a non-empty string"
    if record.get("method") != "POST":
        return f"method must be POST, got {record.get('method')!r}"
    if record.get("url") != EMBEDDINGS_ENDPOINT:
        return f"url must be {EMBEDDINGS_ENDPOINT}, got {record.get('url')!r}"
    body = record.get("body")
    if not isinstance(body, dict):
        return "body must be a JSON object (a /v1/embeddings request)"
    unknown = sorted(set(record) - {"custom_id", "method", "url", "body"})
    if unknown:
        return f"unknown fields {unknown}"
    return custom_id, body


def answered_line(custom_id: str, status_code: int, body: Any) -> dict:
    """An output (status 200) or error-file line for a request the embeddings code answered."""
    return {"id": new_id("batch_req_"), "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": new_id("req_"), "body": body}, "error": None}


def refused_line(custom_id: Any, line: int, reason: str) -> dict:
    """An error-file line for an input line that is no request at all (malformed JSON, a missing field)."""
    return {"id": new_id("batch_req_"), "custom_id": custom_id if isinstance(custom_id, str) else None,
            "response": None, "error": {"code": "invalid_request", "message": f"line {line + 1}: {reason}",
                                        "line": line + 1}}


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for line in lines)


# --- files and batches on disk ----------------------------------------------------------------------------

class BatchFiles:
    """Uploaded files and the batches' output files, under ``<batches.dir>/files``."""

    def __init__(self, root: str | Path):
        self.directory = Path(root) / "files"

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        if not _FILE_ID.fullmatch(file_id):
            raise NotFoundError(f"no file {file_id!r}", param="file_id")
        return self.directory / f"{file_id}.json", self.directory / f"{file_id}.jsonl"

    def add(self, filename: str, purpose: FilePurpose, content: bytes) -> FileObject:
        record = FileObject(id=new_id("file-"), bytes=len(content), created_at=int(time.time()),
                            filename=filename, purpose=purpose)
        meta, data = self._paths(record.id)
        write_atomically(data, content)
        write_atomically(meta, record.model_dump_json().encode())
        return record

    def adopt(self, filename: str, purpose: FilePurpose, path: Path) -> FileObject:
        """A file made elsewhere on the same disk (a batch's joined output), moved into the store."""
        record = FileObject(id=new_id("file-"), bytes=path.stat().st_size, created_at=int(time.time()),
                            filename=filename, purpose=purpose)
        meta, data = self._paths(record.id)
        data.parent.mkdir(parents=True, exist_ok=True)
        path.replace(data)
        write_atomically(meta, record.model_dump_json().encode())
        return record

    def get(self, file_id: str) -> FileObject:
        meta, _ = self._paths(file_id)
        try:
            return FileObject.model_validate_json(meta.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"no file {file_id!r}", param="file_id") from None

    def content_path(self, file_id: str) -> Path:
        self.get(file_id)
        return self._paths(file_id)[1]

    def all(self) -> list[FileObject]:
        """Every file, oldest first."""
        if not self.directory.is_dir():
            return []
        records = []
        for meta in self.directory.glob("file-*.json"):
            try:
                records.append(FileObject.model_validate_json(meta.read_bytes()))
            except FileNotFoundError:  # deleted while listed
                continue
        return sorted(records, key=lambda record: (record.created_at, record.id))

    def page(self, limit: int, after: str | None, order: Literal["asc", "desc"], purpose: str | None) -> FileList:
        """``GET /v1/files``: by creation time in ``order``, of one ``purpose`` if given."""
        records = [record for record in self.all() if purpose is None or record.purpose == purpose]
        return FileList.of(records if order == "asc" else records[::-1], limit, after)

    def delete(self, file_id: str) -> FileDeleted:
        """The record first, so that a reader never finds a record without its bytes."""
        meta, data = self._paths(file_id)
        self.get(file_id)
        meta.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        return FileDeleted(id=file_id)


def check_upload(content: bytes, purpose: str, *, max_bytes: int, max_lines: int) -> None:
    """A file for ``POST /v1/files``: purpose ``batch``, UTF-8, at most ``max_lines`` request lines (each line is
    checked when the batch runs, and reported in its error file)."""
    if purpose != "batch":
        raise InvalidInputError(f"purpose must be 'batch' (the only purpose this service takes), got {purpose!r}",
                                param="purpose")
    if len(content) > max_bytes:
        raise PayloadTooLargeError(f"file of {len(content)} bytes exceeds batches.max_file_bytes ({max_bytes})",
                                   param="file")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"file is not UTF-8 text (byte {error.start}): upload JSONL, one request per line",
                                param="file") from None
    lines = sum(1 for line in text.splitlines() if line.strip())
    if not lines:
        raise InvalidInputError("file holds no request lines", param="file")
    if lines > max_lines:
        raise InvalidInputError(f"file holds {lines} request lines, more than batches.max_lines ({max_lines}): "
                                "split it into several batches", param="file")


class BatchStore:
    """Batch records under ``<batches.dir>/batches``. A record is written by its creator, then by its job alone;
    a cancel is asked for with a file of its own, so the two never write the same file."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.directory = self.root / "batches"
        self.files = BatchFiles(root)

    def _home(self, batch_id: str) -> Path:
        if not _BATCH_ID.fullmatch(batch_id):
            raise NotFoundError(f"no batch {batch_id!r}", param="batch_id")
        return self.directory / batch_id

    def job_directory(self, batch_id: str) -> Path:
        return self._home(batch_id) / "job"

    def create(self, request: BatchRequest) -> Batch:
        source = self.files.get(request.input_file_id)
        if source.purpose != "batch":
            raise InvalidInputError(f"file {source.id!r} has purpose {source.purpose!r}; a batch reads a file "
                                    "uploaded with purpose 'batch'", param="input_file_id")
        now = int(time.time())
        batch = Batch(id=new_id("batch_"), endpoint=request.endpoint, input_file_id=source.id,
                      completion_window=request.completion_window, status="validating", created_at=now,
                      expires_at=now + WINDOW_S, metadata=request.metadata)
        self.save(batch)
        return batch

    def save(self, batch: Batch) -> None:
        write_atomically(self._home(batch.id) / "batch.json", batch.model_dump_json().encode())

    def stored(self, batch_id: str) -> Batch:
        """The record as its job last wrote it."""
        try:
            return Batch.model_validate_json((self._home(batch_id) / "batch.json").read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"no batch {batch_id!r}", param="batch_id") from None

    def get(self, batch_id: str) -> Batch:
        """The batch as callers see it: ``cancelling`` from the moment a cancel was asked for until its job ends it."""
        batch = self.stored(batch_id)
        asked = self.cancel_asked_at(batch_id)
        if asked is not None and batch.status in ("validating", "in_progress", "finalizing"):
            batch = batch.model_copy(update={"status": "cancelling", "cancelling_at": asked})
        return batch

    def cancel(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        if batch.status in UNFINISHED and batch.status != "cancelling":
            marker = self._home(batch_id) / "cancel"
            write_atomically(marker, b"")
            batch = self.get(batch_id)
        return batch

    def cancel_asked_at(self, batch_id: str) -> int | None:
        try:
            return int((self._home(batch_id) / "cancel").stat().st_mtime)
        except FileNotFoundError:
            return None

    def all(self) -> list[Batch]:
        """Every batch, newest first."""
        if not self.directory.is_dir():
            return []
        batches = [self.get(home.name) for home in self.directory.iterdir()
                   if _BATCH_ID.fullmatch(home.name) and (home / "batch.json").exists()]
        return sorted(batches, key=lambda batch: (batch.created_at, batch.id), reverse=True)

    def page(self, limit: int, after: str | None) -> BatchList:
        """``GET /v1/batches``: newest first, ``limit`` of them after the batch ``after``."""
        return BatchList.of(self.all(), limit, after)

    def delete_file(self, file_id: str) -> FileDeleted:
        """A file no unfinished batch reads (its job would lose its input mid-way): 409 while one does."""
        readers = [batch.id for batch in self.all() if batch.status in UNFINISHED and batch.input_file_id == file_id]
        if readers:
            raise ConflictError(f"file {file_id!r} is the input of unfinished batch(es) {readers}: cancel them or "
                                "wait until they end", param="file_id")
        return self.files.delete(file_id)

    def unfinished(self) -> list[str]:
        """Batches whose job must run to end them: after a restart, those it left half done."""
        return [batch.id for batch in self.all() if batch.status in UNFINISHED]
