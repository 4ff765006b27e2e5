"""Documents on the serving replica: validated and embedded here, then written, read or deleted by the store.

Text is embedded by this replica's own model runners (the same batching as ``/v1/embeddings``); only
vectors and rows travel to the store deployment.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from typing import Awaitable, Callable, Iterator, TypeVar

import numpy as np

from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.runner import ItemErrors
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store import CollectionMovedError
from rayprism.deployments.store_client import Store
from rayprism.platform.api.requests import DeleteDocumentsRequest, DocumentsRequest
from rayprism.platform.api.responses import Document, DocumentPage, DocumentsDeleted, DocumentsUpserted
from rayprism.platform.codecs.muvera import encode_documents
from rayprism.platform.config import DENSE_FIELD, DOCUMENT_ID_FIELD, ChunkingConfig, CollectionConfig
from rayprism.platform.errors import InvalidInputError, NotFoundError
from rayprism.platform.models.base import prompt_for_role
from rayprism.platform.store.documents import (
    DocumentProblem,
    InvalidDocumentsError,
    check_documents,
    normalise_id,
    validate_documents,
)
from rayprism.platform.store.pieces import document_digest, document_pieces
from rayprism.platform.store.tokens import TOKENS_KEY
from rayprism.platform.text.chunking import Chunker, load_chunker

STORE_CALL_MAX_BYTES = 3 << 20
"""Rows sent to the store in one call, about: Serve's gRPC between replicas refuses messages over 4 MiB
(``RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH``); the token vectors of 60 MiniLM documents take about 8,
a 1 MB document's pieces about 3."""

RequestT = TypeVar("RequestT")
AnswerT = TypeVar("AnswerT")


def _media_problem(config: CollectionConfig, index: int, error: InvalidInputError) -> DocumentProblem:
    """A media error (about ``input[k]``) as the problem of the document at ``index``."""
    return DocumentProblem(index, config.media_key, re.sub(r"^input\[\d+\]:? ", "", error.message))


def _store_calls(rows: list[dict]) -> Iterator[list[dict]]:
    """``rows`` in consecutive parts whose vectors and text fit one store call."""
    part: list[dict] = []
    size = 0
    for row in rows:
        row_size = sum(value.nbytes if isinstance(value, np.ndarray) else len(value) if isinstance(value, str) else 8
                       for value in row.values())
        if part and size + row_size > STORE_CALL_MAX_BYTES:
            yield part
            part, size = [], 0
        part.append(row)
        size += row_size
    if part:
        yield part


async def _again_if_moved(write: Callable[[str, RequestT], Awaitable[AnswerT]], name: str, request: RequestT) -> AnswerT:
    """``write(name, request)``, made once more if the alias ``name`` moved (a re-embedding's swap) between
    resolving it and reaching the store: the second time it resolves to where the alias points now."""
    try:
        return await write(name, request)
    except CollectionMovedError:
        return await write(name, request)


class DocumentsService:
    """Upsert, read and delete a collection's documents, as ``/v1/collections/{name}/documents``."""

    def __init__(self, embeddings: EmbeddingService, collections: CollectionsService, store: Store):
        self._embeddings = embeddings
        self._collections = collections
        self._store = store
        self._chunkers: dict[tuple[str, ChunkingConfig], Chunker] = {}

    async def upsert(self, name: str, request: DocumentsRequest) -> DocumentsUpserted:
        """Write what changed: text documents stored with the same text and fields are left alone (a
        re-run costs no embedding), documents with their own ``vector`` are not embedded. A media
        document's item is embedded, not stored, so media documents are always written. A write whose
        alias moved (a re-embedding's swap) before it reached the store is made again where it points now."""
        self._embeddings.check_input_count(len(request.documents), "documents", "documents")
        return await _again_if_moved(self._upsert, name, request)

    async def _upsert(self, name: str, request: DocumentsRequest) -> DocumentsUpserted:
        config = await self._collections.collection(name)
        dimensions = self._embeddings.runner(config.model).encoder.dimensions
        if config.media_key:  # media problems are listed together with the others
            rows, problems = check_documents(config, request.documents, dimensions=dimensions)
        else:  # a multi-vector or chunked document cannot bring its own vector: it has token vectors, or pieces
            own_vectors = not (config.multivector or config.chunking)
            rows = validate_documents(config, request.documents, dimensions=dimensions if own_vectors else None)
        with self._collections.forgotten_if_gone(config.name):
            if config.chunking:
                changed, tokens = await self._pieces_to_write(config, rows)
                await self._write_whole(config.name, changed, name)
                count = len({row[DOCUMENT_ID_FIELD] for row in changed})
                return DocumentsUpserted(object="documents.upserted", collection=name, upserted=count,
                                         unchanged=len(rows) - count, tokens=tokens)
            if config.media_key:
                changed = rows
                tokens = await self._embed_media(config, request.documents, rows, problems)
            elif config.multivector:
                changed = await self._changed(config, rows)
                tokens = await self._embed_token_vectors(config, rows, changed) if changed else 0
            else:
                changed = await self._changed(config, rows)
                to_embed = [row for row in changed if DENSE_FIELD not in row]
                tokens = 0
                if to_embed:
                    embedded = await self._embeddings.embed_texts(config.model, [row[config.text_field] for row in to_embed], "document")
                    for row, vector in zip(to_embed, embedded.vectors):
                        row[DENSE_FIELD] = vector
                    tokens = sum(embedded.token_counts)
            count = await self._write_whole(config.name, changed, name)
        return DocumentsUpserted(object="documents.upserted", collection=name, upserted=count,
                                 unchanged=len(rows) - len(changed), tokens=tokens)

    async def _write_whole(self, name: str, rows: list[dict], via: str) -> int:
        """A request's rows in as many store calls as their size needs, all made once the first is: a client
        hanging up cancels its request (``cancelled_if_client_leaves``), and a cancel between two calls would
        leave half its documents. Shielding is not enough: Serve cancels every call a cancelled request makes to
        another deployment, so the calls run in a task outside the request's context (tested by hanging up)."""
        async def write() -> int:
            count = 0
            for part in _store_calls(rows):
                count += await self._store.upsert(name, part, via)
            return count

        return await asyncio.shield(asyncio.get_running_loop().create_task(write(), context=contextvars.Context()))

    async def _pieces_to_write(self, config: CollectionConfig, rows: list[dict]) -> tuple[list[dict], int]:
        """The embedded pieces of the documents that changed (those not stored whole with the same text and
        fields), in document order, and the tokens embedded."""
        digests = [document_digest(config, row) for row in rows]
        stored = await self._store.document_hashes(config.name, [row["id"] for row in rows])
        changed = [(row, digest) for row, digest in zip(rows, digests) if stored.get(row["id"]) != digest]
        if not changed:
            return [], 0
        chunker = await self._chunker(config)

        def cut() -> list[tuple[dict, str]]:
            return [piece for row, digest in changed for piece in document_pieces(config, chunker, row, digest)]

        pieces = await asyncio.to_thread(cut)
        embedded = await self._embeddings.embed_texts(config.model, [text for _, text in pieces], "document")
        for (row, _), vector in zip(pieces, embedded.vectors):
            row[DENSE_FIELD] = vector
        return [row for row, _ in pieces], sum(embedded.token_counts)

    async def _chunker(self, config: CollectionConfig) -> Chunker:
        """The collection's chunker, made on first use (loading a tokenizer takes a moment: not on the event loop)."""
        key = (config.model, config.chunking)
        if key not in self._chunkers:
            runner = self._embeddings.runner(config.model)
            encoder = runner.encoder
            prompt = encoder.prompts.get(prompt_for_role(encoder.prompts, "document") or "")
            self._chunkers[key] = await asyncio.to_thread(
                load_chunker, runner.config.source, config.chunking, model_max_tokens=encoder.max_input_tokens,
                prompt=prompt)
        return self._chunkers[key]

    async def _changed(self, config: CollectionConfig, rows: list[dict]) -> list[dict]:
        """The rows that bring a vector of their own or differ from what the store holds."""
        content = ["id", config.text_field, *config.fields]
        stored = {row["id"]: row for row in await self._store.get(config.name, [row["id"] for row in rows], content)}
        return [row for row in rows if DENSE_FIELD in row or stored.get(row["id"]) != {key: row[key] for key in content}]

    async def _embed_token_vectors(self, config: CollectionConfig, rows: list[dict], changed: list[dict]) -> int:
        """Token vectors and their MUVERA encoding for each changed row of a multi-vector collection; a
        document whose text gives no token vector (only special tokens, such as [UNK]) is a problem."""
        runner = self._embeddings.runner(config.model)
        embedded = await runner.embed_tokens([row[config.text_field] for row in changed],
                                             prompt_for_role(runner.encoder.prompts, "document"))
        index_of = {row["id"]: index for index, row in enumerate(rows)}
        empty = [DocumentProblem(index_of[row["id"]], config.text_field, "gives no token vectors (only special tokens)")
                 for row, matrix in zip(changed, embedded.tokens) if not len(matrix)]
        if empty:
            raise InvalidDocumentsError(empty)
        offsets = np.concatenate([[0], np.cumsum([len(matrix) for matrix in embedded.tokens])])
        encodings = encode_documents(np.concatenate(embedded.tokens), offsets, self._collections.fde(config))
        for row, matrix, encoding in zip(changed, embedded.tokens, encodings):
            row[TOKENS_KEY], row[DENSE_FIELD] = matrix, encoding
        return sum(embedded.token_counts)

    async def _embed_media(self, config: CollectionConfig, documents: list, rows: list[dict],
                           problems: list[DocumentProblem]) -> int:
        """Vectors for the rows without one, from their documents' media items. The items of documents
        without other problems are decoded; every problem is reported with its document's index, and
        then nothing is written."""
        runner = self._embeddings.runner(config.model)
        invalid = {problem.index for problem in problems}
        pending = [(index, row) for index, row in enumerate(rows) if DENSE_FIELD not in row and index not in invalid]
        items = [documents[index][config.media_key] for index, _ in pending]
        try:
            items = await self._embeddings.media_inputs(items, config.modality)
        except InvalidInputError as error:  # a URL that could not be fetched: param is input[k]
            position = int(error.param.strip("input[]"))
            problems = [*problems, _media_problem(config, pending[position][0], error)]
            raise InvalidDocumentsError(sorted(problems, key=lambda problem: problem.index)) from None
        embedded = await runner.embed_each(items, config.modality) if items else None
        if isinstance(embedded, ItemErrors):
            problems = [*problems, *(_media_problem(config, pending[position][0], error)
                                     for position, error in embedded.errors.items())]
        if problems:
            raise InvalidDocumentsError(sorted(problems, key=lambda problem: problem.index))
        if embedded is None:
            return 0
        for (_, row), vector in zip(pending, embedded.vectors):
            row[DENSE_FIELD] = vector
        return sum(embedded.token_counts)

    async def delete(self, name: str, request: DeleteDocumentsRequest) -> DocumentsDeleted:
        return await _again_if_moved(self._delete, name, request)

    async def _delete(self, name: str, request: DeleteDocumentsRequest) -> DocumentsDeleted:
        config = await self._collections.collection(name)
        ids = []
        for index, value in enumerate(request.ids):
            try:
                ids.append(normalise_id(config, value))
            except ValueError as error:
                raise InvalidInputError(f"ids[{index}] {error}", param=f"ids[{index}]") from None
        with self._collections.forgotten_if_gone(config.name):
            count = await self._store.delete(config.name, ids, name)
        return DocumentsDeleted(object="documents.deleted", collection=name, deleted=count)

    async def get_document(self, name: str, document_id: str, pieces: bool = False) -> Document:
        """``pieces``: also the pieces a chunked collection stores the document as (refused for another)."""
        config = await self._collections.collection(name)
        if pieces and config.chunking is None:
            raise InvalidInputError(f"collection {name!r} is not chunked: it stores each document whole, without "
                                    "pieces", param="pieces")
        try:
            key = normalise_id(config, int(document_id) if config.id_type == "int64" else document_id)
        except ValueError as error:
            raise InvalidInputError(f"id {error}", param="id") from None
        with self._collections.forgotten_if_gone(config.name):
            found = await self._store.get(config.name, [key], ["id", config.text_field, *config.fields])
            if found and pieces:
                found[0]["pieces"] = await self._store.pieces(config.name, key)
        if not found:
            raise NotFoundError(f"document {document_id!r} is not in collection {name!r}")
        return Document(object="document", **found[0])


    async def page(self, name: str, limit: int, offset: int = 0, after: str | None = None) -> DocumentPage:
        """``limit`` documents in the order of their ids: those after the id ``after`` (a cursor; it need not be
        stored), else those from position ``offset`` (which walks the ids before it: page with ``after``)."""
        config = await self._collections.collection(name)
        cursor = None
        if after is not None:
            try:
                cursor = normalise_id(config, int(after) if config.id_type == "int64" else after)
            except ValueError as error:
                raise InvalidInputError(f"after {error}", param="after") from None
            if offset:
                raise InvalidInputError("give after (a cursor) or offset, not both", param="offset")
        with self._collections.forgotten_if_gone(config.name):
            page = await self._store.document_page(config.name, limit, ["id", config.text_field, *config.fields],
                                                   cursor, offset)
        data = [Document(object="document", **row) for row in page.rows]
        return DocumentPage(object="list", collection=name, total=page.total, after=cursor,
                            offset=None if after is not None else offset, limit=limit, data=data,
                            first_id=data[0]["id"] if data else None, last_id=data[-1]["id"] if data else None,
                            has_more=page.has_more)
