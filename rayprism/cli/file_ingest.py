"""``rayprism ingest`` of files: the documents a collection gets from them, and the local record of what was sent.

Files are found and read by :mod:`rayprism.platform.text.files`; each becomes a document whose id is its path
relative to the argument it was found through, with the file fields the collection declares. A record on
this machine (:class:`SentRecord`) remembers each file the service took, by content hash, so a run after an
interruption or a change sends only the files it does not know: the rest are not even read.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

from rayprism.client import IngestSummary, Rejected, SourceDocument
from rayprism.platform.constants import XDG_STATE_HOME_VARIABLE
from rayprism.platform.files import write_atomically
from rayprism.platform.text.files import (
    FILE_FIELDS,
    RECOMMENDED_FIELDS,
    FileProblem,
    SourceFile,
    content_hash,
    read_file,
)


class CollectionUnfitError(ValueError):
    """The collection cannot hold files' documents at all; the message says what would."""


def file_fields(name: str, schema: dict) -> tuple[list[str], list[str]]:
    """(the file fields to send, the recommended ones the collection lacks) for collection ``name`` as
    ``GET /v1/collections/{name}`` describes it; :class:`CollectionUnfitError` if files cannot go in."""
    advice = "create it with " + json.dumps({"fields": {field: "varchar" for field in RECOMMENDED_FIELDS}})
    if schema.get("modality", "text") != "text":
        raise CollectionUnfitError(f"collection {name!r} holds {schema['modality']}; files give text ({advice})")
    if schema["id_type"] != "varchar":
        raise CollectionUnfitError(f"collection {name!r} has {schema['id_type']} ids; a file's id is its path, "
                                   f"text: {advice} (varchar ids are the default)")
    fields = schema["fields"]
    mistyped = {field: fields[field] for field in FILE_FIELDS if fields.get(field, "varchar") != "varchar"}
    if mistyped:
        raise CollectionUnfitError(f"collection {name!r} declares {mistyped}; files give these fields as text: "
                                   f"declare them varchar ({advice})")
    return [field for field in FILE_FIELDS if field in fields], [f for f in RECOMMENDED_FIELDS if f not in fields]


def missing_fields_note(name: str, missing: Sequence[str]) -> str:
    """What a user reads when the collection lacks recommended fields: they are not stored, and how to have them."""
    wanted = json.dumps({"fields": {field: "varchar" for field in RECOMMENDED_FIELDS}})
    return (f"note: collection {name!r} has no field {', '.join(map(repr, missing))}: not stored. To keep every "
            f"file's path, title and modification time, create the collection with {wanted}")


class SentRecord:
    """The files one service's collection took from this machine: document id → (content hash, path).

    A JSON Lines file that grows by one line per document as soon as the service answers for its batch,
    so a run stopped by Ctrl-C keeps what it sent; loading it keeps the last line of each id (a line cut
    by a crash is ignored) and rewrites it compact."""

    def __init__(self, path: Path):
        self.path = path
        self._sent: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self._out = None
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            for line in lines:
                try:
                    entry = json.loads(line)
                    self._sent[entry["id"]] = (entry["hash"], entry["path"])
                except (ValueError, KeyError, TypeError):
                    continue
            if len(lines) > len(self._sent):
                self._rewrite()

    @staticmethod
    def default_path(url: str, collection: str) -> Path:
        """``$XDG_STATE_HOME/rayprism/ingest/<collection>-<digest of the service URL>.jsonl``
        (``~/.local/state/...`` by default): one record per service and collection."""
        home = Path(os.environ.get(XDG_STATE_HOME_VARIABLE) or Path.home() / ".local" / "state")
        service = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
        return home / "rayprism" / "ingest" / f"{collection}-{service}.jsonl"

    def __len__(self) -> int:
        return len(self._sent)

    def unchanged(self, source: SourceFile) -> bool:
        """Whether the service took this file, with the same bytes from the same place, on an earlier run
        (only a file the record knows is hashed)."""
        sent = self._sent.get(source.id)
        if sent is None or sent[1] != source.path.as_posix():
            return False
        try:
            return sent[0] == content_hash(source.path)
        except OSError:  # unreadable now: reading it will say why
            return False

    def add(self, files: list[tuple[str, str, str]]) -> None:
        """Files the service took: (id, content hash, path) each."""
        lines = "".join(json.dumps({"id": key, "hash": digest, "path": path}) + "\n" for key, digest, path in files)
        with self._lock:
            if self._out is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._out = self.path.open("a", encoding="utf-8")
            self._out.write(lines)
            self._out.flush()
            self._sent.update((key, (digest, path)) for key, digest, path in files)

    def clear(self) -> None:
        """Forget every file (the collection was emptied or made again): the next run sends them all."""
        self._sent.clear()
        self._rewrite()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _rewrite(self) -> None:
        lines = "".join(json.dumps({"id": key, "hash": digest, "path": path}) + "\n"
                        for key, (digest, path) in self._sent.items())
        write_atomically(self.path, lines.encode())


class FileIngest:
    """Files found by :func:`~rayprism.platform.text.files.find_files` as the documents a collection takes:
    problems recorded as rejected (by path), files the record knows unchanged skipped unread (with
    ``skip_known``), the rest read and shaped (:meth:`documents`); :meth:`written` records what the service took."""

    def __init__(self, text_field: str, fields: Sequence[str], record: SentRecord, summary: IngestSummary,
                 on_passed: Callable[[], None], *, skip_known: bool = True):
        self._text_field = text_field
        self._fields = list(fields)
        self._record = record
        self._skip_known = skip_known
        self._summary = summary
        self._on_passed = on_passed
        self._sending: dict[str, tuple[str, str, str]] = {}
        """Documents sent and not answered yet: id → what the record keeps of their file."""
        self.skipped = 0
        """Files the record showed unchanged: not read, not sent."""

    def documents(self, found: Sequence[SourceFile | FileProblem]) -> Iterator[SourceDocument]:
        """The documents to send, in order; ``on_passed`` hears of each file that is not sent."""
        for item in found:
            if isinstance(item, SourceFile) and self._skip_known and self._record.unchanged(item):
                self.skipped += 1
                self._on_passed()
                continue
            document = read_file(item) if isinstance(item, SourceFile) else item
            if isinstance(document, FileProblem):
                self._summary.rejected.append(Rejected(document.path, document.reason))
                self._on_passed()
                continue
            self._sending[document.id] = (document.id, document.content_hash, document.path)
            yield SourceDocument(document.path, document.record(self._text_field, self._fields))

    def written(self, batch: list[SourceDocument]) -> None:
        """The service took these documents: recorded, so the next run does not send them again."""
        self._record.add([self._sending.pop(document.body["id"]) for document in batch])
