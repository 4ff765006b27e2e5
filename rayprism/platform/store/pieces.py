"""A chunked collection's documents as pieces in Milvus, and pieces back as documents.

Each piece is one Milvus row: its primary key is ``{document id}#{index}``, and it carries the document's
id, its place, the piece count and a digest of the whole document, beside the document's own fields
(copied, so a filter on a field selects pieces) and its slice of the text (indexed for BM25 and shown as a
passage). The slices tile the text exactly, so a document is read back by joining them.

Writes are made safe against a crash by their order, not by a transaction (Milvus has none): a changed
document's new pieces are written first, then the pieces past its new count are deleted. A crash in between
leaves pieces of two versions; :func:`whole_documents` tells them apart by their digest and count, so the
same upsert again sees the document as changed and writes it whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from rayprism.platform.config import (
    DOCUMENT_HASH_FIELD,
    DOCUMENT_ID_FIELD,
    PIECE_COUNT_FIELD,
    PIECE_INDEX_FIELD,
    PIECE_START_FIELD,
    CollectionConfig,
)
from rayprism.platform.store.vocabulary import Hits
from rayprism.platform.text.chunking import TITLE_FIELD

if TYPE_CHECKING:
    from rayprism.platform.text.chunking import Chunker

KEY_SEPARATOR = "#"
"""Between a document's id and a piece's index in the piece's key (the index is digits: the last ``#`` splits)."""
KEY_SUFFIX_MAX_BYTES = 8
"""What ``#index`` adds to a document id: a piece key must fit the collection's id limit."""
PIECE_READ_FIELDS = ("id", DOCUMENT_ID_FIELD, PIECE_INDEX_FIELD, PIECE_COUNT_FIELD, DOCUMENT_HASH_FIELD)
"""What tells whether a document's stored pieces are whole: read before writing it again."""


def piece_key(document_id: str | int, index: int) -> str:
    return f"{document_id}{KEY_SEPARATOR}{index}"


def is_opening(key: str) -> bool:
    """Whether a piece key names its document's first piece."""
    return key.rpartition(KEY_SEPARATOR)[2] == "0"


def document_of(key: str, id_type: str) -> str | int:
    """The id of the document a piece key belongs to, typed as the collection's ids."""
    document_id = key.rpartition(KEY_SEPARATOR)[0]
    return int(document_id) if id_type == "int64" else document_id


def document_hash(values: Sequence[Any]) -> str:
    """A digest of what makes a document (its text and fields, in a fixed order)."""
    return hashlib.sha256(json.dumps(list(values), ensure_ascii=False, default=str).encode()).hexdigest()


def document_digest(config: CollectionConfig, row: dict) -> str:
    """The :func:`document_hash` of a chunked collection's document ``row`` (its text, then its fields by name):
    what its pieces carry, and how an upsert tells an unchanged document."""
    return document_hash([row[key] for key in (config.text_field, *sorted(config.fields))])


def document_pieces(config: CollectionConfig, chunker: Chunker, row: dict, digest: str) -> list[tuple[dict, str]]:
    """A document ``row`` of a chunked collection cut into its piece rows (vectors still to add), each with
    what its vector is made from (:attr:`~rayprism.platform.text.chunking.Piece.embed_text`). One definition
    for every writer (the service's documents API and batch jobs), so both store the same pieces. A varchar
    ``title`` field heads every piece's context."""
    text = row[config.text_field]
    title = (row.get(TITLE_FIELD) or "") if config.fields.get(TITLE_FIELD) == "varchar" else ""
    split = chunker.split(text, title=title, markdown=config.chunking.markdown)
    slices = tiling(text, [(piece.start, piece.end) for piece in split])
    return [(piece_row, piece.embed_text)
            for piece_row, piece in zip(piece_rows(row, config.text_field, slices, digest), split)]


@dataclass(frozen=True, slots=True)
class Slice:
    """One piece as stored: where it starts in the document and its text."""

    start: int
    text: str


def tiling(text: str, spans: Sequence[tuple[int, int]]) -> list[Slice]:
    """Slices of ``text`` for pieces at ``spans`` (start, end), in order, that together cover it: a piece's slice
    also takes the whitespace a splitter trimmed before the next piece (and the first, from the start), so
    joining the slices, overlaps once, gives ``text`` back exactly."""
    slices = []
    for i, (start, end) in enumerate(spans):
        start = 0 if i == 0 else start
        following = spans[i + 1][0] if i + 1 < len(spans) else len(text)
        slices.append(Slice(start, text[start:max(end, following)]))
    return slices


def joined(slices: Iterable[Slice]) -> str:
    """The text a document's slices (in order) tile."""
    parts, covered = [], 0
    for piece in slices:
        parts.append(piece.text[max(0, covered - piece.start):])
        covered = max(covered, piece.start + len(piece.text))
    return "".join(parts)


def piece_rows(document: dict, text_field: str, slices: list[Slice], digest: str) -> list[dict]:
    """Milvus rows for a document's slices (vectors are added by the caller): each has the document's fields."""
    fields = {name: value for name, value in document.items() if name not in ("id", text_field)}
    return [{**fields, "id": piece_key(document["id"], index), text_field: piece.text,
             DOCUMENT_ID_FIELD: document["id"], PIECE_INDEX_FIELD: index, PIECE_COUNT_FIELD: len(slices),
             PIECE_START_FIELD: piece.start, DOCUMENT_HASH_FIELD: digest}
            for index, piece in enumerate(slices)]


def whole_documents(rows: Iterable[dict]) -> dict[Any, str]:
    """The digest of each document whose stored pieces (``rows``, with :data:`PIECE_READ_FIELDS`) are one whole
    version: every index below the count present, all with the same digest and count, none past it."""
    found: dict[Any, list[dict]] = {}
    for row in rows:
        found.setdefault(row[DOCUMENT_ID_FIELD], []).append(row)
    whole = {}
    for document_id, pieces in found.items():
        versions = {(piece[DOCUMENT_HASH_FIELD], piece[PIECE_COUNT_FIELD]) for piece in pieces}
        if len(versions) != 1:
            continue
        digest, count = versions.pop()
        if sorted(piece[PIECE_INDEX_FIELD] for piece in pieces) == list(range(count)):
            whole[document_id] = digest
    return whole


def stale_keys(rows: Iterable[dict], counts: dict[Any, int]) -> list[str]:
    """Keys of the stored pieces (``rows``) past their document's new piece count (``counts``)."""
    return [row["id"] for row in rows if row[PIECE_INDEX_FIELD] >= counts.get(row[DOCUMENT_ID_FIELD], 0)]


def documents_from_pieces(rows: Iterable[dict], text_field: str, fields: Sequence[str]) -> list[dict]:
    """Documents (``id``, text, ``fields``) joined from their pieces' rows, in the order documents first appear."""
    by_document: dict[Any, list[dict]] = {}
    for row in rows:
        by_document.setdefault(row[DOCUMENT_ID_FIELD], []).append(row)
    documents = []
    for document_id, pieces in by_document.items():
        pieces.sort(key=lambda row: row[PIECE_INDEX_FIELD])
        text = joined(Slice(row[PIECE_START_FIELD], row[text_field]) for row in pieces)
        documents.append({"id": document_id, text_field: text, **{name: pieces[0].get(name) for name in fields}})
    return documents


def by_document(hits: Hits, id_type: str) -> Hits:
    """Piece hits (best first) as document hits, each scored by its best piece, best first."""
    best: dict[Any, float] = {}
    for key, score in hits:
        best.setdefault(document_of(key, id_type), score)  # a document enters at its best piece
    return list(best.items())


def best_pieces(hits: Hits, documents: Sequence[Any], passages: int, id_type: str) -> list[Hits]:
    """For each of ``documents``, its best ``passages`` piece hits (key, score) among ``hits`` (best first)."""
    wanted: dict[Any, list[tuple[str, float]]] = {document_id: [] for document_id in documents}
    for key, score in hits:
        pieces = wanted.get(document_of(key, id_type))
        if pieces is not None and len(pieces) < passages:
            pieces.append((key, score))
    return [wanted[document_id] for document_id in documents]
