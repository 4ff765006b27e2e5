"""Check documents against a collection before anything is embedded or written.

All problems of a batch are collected with the index of the document they
belong to, so a caller can fix them in one go; a batch with any problem is
rejected whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayprism.platform.codecs.wire import from_base64
from rayprism.platform.config import DENSE_FIELD, DOCUMENT_VECTOR_KEY, CollectionConfig
from rayprism.platform.errors import ErrorResponse, InvalidInputError
from rayprism.platform.store.filters import UNQUOTABLE
from rayprism.platform.store.layout import VARCHAR_MAX_BYTES
from rayprism.platform.store.pieces import KEY_SUFFIX_MAX_BYTES
from rayprism.platform.store.vocabulary import ID_MAX_BYTES, INT64_MAX, INT64_MIN

TOO_LONG = (f"is longer than {VARCHAR_MAX_BYTES} bytes, the most Milvus keeps in a text field; a collection with "
            "`chunking` (e.g. {\"max_tokens\": 256, \"overlap_tokens\": 32}) stores documents of any size in pieces")


@dataclass(frozen=True)
class DocumentProblem:
    index: int
    field: str | None
    message: str

    def to_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "message": self.message}


class InvalidDocumentsError(InvalidInputError):
    """Some documents of a batch are invalid; nothing of the batch was written."""

    code = "invalid_documents"

    def __init__(self, problems: list[DocumentProblem]):
        first = problems[0]
        where = f"documents[{first.index}]" + (f".{first.field}" if first.field else "")
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{where}: {first.message}{more}; nothing was written", param="documents")
        self.problems = problems

    def to_body(self) -> ErrorResponse:
        body = super().to_body()
        body["error"]["errors"] = [problem.to_dict() for problem in self.problems]
        return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value_problem(kind: str, value: Any) -> str | None:
    if value is None:
        return None
    if kind == "varchar":
        if not isinstance(value, str):
            return f"must be a string, got {type(value).__name__}"
        if len(value.encode()) > VARCHAR_MAX_BYTES:
            return f"is longer than {VARCHAR_MAX_BYTES} bytes"
    elif kind == "int64":
        if not _is_int(value) or not INT64_MIN <= value <= INT64_MAX:
            return f"must be a 64-bit integer, got {value!r}"
    elif kind == "double":
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
    elif kind == "bool":
        if not isinstance(value, bool):
            return f"must be true or false, got {value!r}"
    return None


def normalise_id(config: CollectionConfig, value: Any) -> str | int:
    """Ids of varchar collections are strings (integers are accepted and written as text); a chunked
    collection's leave room for the ``#index`` of its pieces' keys."""
    if config.id_type == "int64":
        if not _is_int(value) or not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"must be a 64-bit integer, got {value!r}")
        return value
    if _is_int(value):
        return str(value)
    longest = ID_MAX_BYTES - KEY_SUFFIX_MAX_BYTES if config.chunking else ID_MAX_BYTES
    if not isinstance(value, str) or not value or len(value.encode()) > longest:
        raise ValueError(f"must be a non-empty string of at most {longest} bytes, got {value!r}")
    if UNQUOTABLE.search(value):
        raise ValueError(f"must not hold control characters other than tab and line breaks, got {value!r}")
    return value


def decode_vector(value: Any, dimensions: int) -> np.ndarray:
    """A document's own vector: a list of numbers, or base64 of little-endian float32 (as
    ``encoding_format: base64`` returns them); ValueError says what is wrong."""
    if isinstance(value, str):
        vector = from_base64(value)
        if len(vector) != dimensions:
            raise ValueError(f"holds {len(vector)} float32 values; the collection's model has {dimensions}")
    elif isinstance(value, list) and all(_is_int(x) or isinstance(x, float) for x in value):
        if len(value) != dimensions:
            raise ValueError(f"has {len(value)} values; the collection's model has {dimensions}")
        vector = np.array(value, dtype=np.float32)
    else:
        raise ValueError("must be a list of numbers or base64 of float32")
    if not np.isfinite(vector).all():
        raise ValueError("must hold finite numbers")
    return vector


def validate_documents(config: CollectionConfig, documents: list[Any], *, dimensions: int | None = None) -> list[dict]:
    """Rows ready for an upsert (without the media item a media document carries), or
    :class:`InvalidDocumentsError`. ``dimensions`` is given for documents sent to the API: one may
    carry its own ``vector`` (row key ``dense``), else a media document must carry its item."""
    rows, problems = check_documents(config, documents, dimensions=dimensions)
    if problems:
        raise InvalidDocumentsError(problems)
    return rows


def check_documents(config: CollectionConfig, documents: list[Any], *, dimensions: int | None = None
                    ) -> tuple[list[dict], list[DocumentProblem]]:
    """Rows, one per document and in its order, and every problem found (:func:`validate_documents`)."""
    problems: list[DocumentProblem] = []
    rows: list[dict] = []
    first_index_of: dict[str | int, int] = {}
    media_key = config.media_key
    allowed = {"id", config.text_field, *config.fields} | ({DOCUMENT_VECTOR_KEY} if dimensions else set())
    if media_key:
        allowed.add(media_key)
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            problems.append(DocumentProblem(index, None, "must be an object"))
            rows.append({})
            continue
        row: dict = {}
        try:
            row["id"] = normalise_id(config, document.get("id"))
        except ValueError as error:
            problems.append(DocumentProblem(index, "id", str(error)))
        else:
            if row["id"] in first_index_of:
                problems.append(DocumentProblem(index, "id", f"repeats documents[{first_index_of[row['id']]}]"))
            first_index_of.setdefault(row["id"], index)
        text = document.get(config.text_field)
        if media_key and text is None:
            text = ""  # a media document's caption is optional
        if media_key and not isinstance(text, str):
            problems.append(DocumentProblem(index, config.text_field, "must be a string (the caption)"))
        elif not media_key and (not isinstance(text, str) or not text.strip()):
            problems.append(DocumentProblem(index, config.text_field, "must be a non-empty string"))
        elif not config.chunking and len(text.encode()) > VARCHAR_MAX_BYTES:
            problems.append(DocumentProblem(index, config.text_field, TOO_LONG))
        row[config.text_field] = text
        for name in sorted(document.keys() - allowed):
            problems.append(DocumentProblem(index, name, f"unknown field; this collection has {sorted(allowed)}"))
        for name, kind in config.fields.items():
            value = document.get(name)
            problem = _value_problem(kind, value)
            if problem:
                problems.append(DocumentProblem(index, name, problem))
            row[name] = value
        if dimensions and DOCUMENT_VECTOR_KEY in document:
            try:
                row[DENSE_FIELD] = decode_vector(document[DOCUMENT_VECTOR_KEY], dimensions)
            except ValueError as error:
                problems.append(DocumentProblem(index, DOCUMENT_VECTOR_KEY, str(error)))
        elif media_key and dimensions:
            item = document.get(media_key)
            if not isinstance(item, str) or not item:
                problems.append(DocumentProblem(index, media_key, f"must be the {config.modality} as a data: URI"))
        rows.append(row)
    return rows, problems
