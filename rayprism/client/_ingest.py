"""What ingest reads and reports: documents with where they came from, a JSONL reader that records bad lines,
the mapping of a source's keys onto a collection's fields, and the summary of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator


@dataclass
class Rejected:
    where: str
    reason: str


@dataclass
class IngestSummary:
    upserted: int = 0
    unchanged: int = 0
    """Documents the service already held with the same content (not embedded again)."""
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        return (self.upserted + self.unchanged) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class SourceDocument:
    where: str
    """Where it came from, for error reports: ``file.jsonl:17``."""
    body: dict


def read_jsonl(path: Path, summary: IngestSummary) -> Iterator[SourceDocument]:
    """Documents of a JSONL file; lines that are not JSON objects are recorded as rejected."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                body = json.loads(line)
            except json.JSONDecodeError as error:
                summary.rejected.append(Rejected(where, f"not JSON: {error.msg}"))
                continue
            if not isinstance(body, dict):
                summary.rejected.append(Rejected(where, "not a JSON object"))
                continue
            yield SourceDocument(where, body)


@dataclass
class FieldMapping:
    """How a source's records become a collection's documents: which keys hold the id and the
    text, and whether keys the collection lacks are dropped (and remembered) or sent."""

    id_field: str = "id"
    text_field: str | None = None
    """Default: the collection's own text field."""
    keep_unknown: bool = False
    dropped: set[str] = field(default_factory=set)
    """Keys left out because the collection has no such field."""

    def apply(self, schema: dict, documents: Iterable[SourceDocument]) -> Iterator[SourceDocument]:
        """``documents`` reshaped for the collection ``schema`` (as ``GET /v1/collections/{name}`` returns it)."""
        target_text = schema["text_field"]
        known = {"id", target_text, *schema["fields"]}
        for document in documents:
            body = dict(document.body)
            if self.id_field != "id":
                body["id"] = body.pop(self.id_field, None)
            if self.text_field and self.text_field != target_text:
                body[target_text] = body.pop(self.text_field, None)
            if not self.keep_unknown:
                self.dropped.update(body.keys() - known)
                body = {key: value for key, value in body.items() if key in known}
            yield SourceDocument(document.where, body)


def batched(documents: Iterable[SourceDocument], size: int) -> Iterator[list[SourceDocument]]:
    iterator = iter(documents)
    while batch := list(islice(iterator, size)):
        yield batch


def hashable(value) -> object:
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.dumps(value, sort_keys=True)
