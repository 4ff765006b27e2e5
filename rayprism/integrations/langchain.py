"""LangChain classes over a rayprism service: ``RayprismEmbeddings`` (an ``Embeddings``),
``RayprismVectorStore`` (a ``VectorStore`` over a collection) and ``RayprismRerank`` (a document
compressor over ``/v1/rerank``). Install with ``pip install 'rayprism[langchain]'``.

The service embeds what a collection stores and searches with: the store needs no ``Embeddings`` of
its own, and its hybrid (dense + BM25) search, filters and reranker are the service's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rayprism.client import DEFAULT_URL, Client
from rayprism.integrations._documents import Layout
from rayprism.integrations._extras import missing_extra
from rayprism.integrations._service import SEARCH_PAGE, Connected, Service

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as error:
    raise missing_extra(__name__, "langchain", error) from error

__all__ = ["RayprismEmbeddings", "RayprismRerank", "RayprismVectorStore"]


class RayprismEmbeddings(Connected, Embeddings):
    """``/v1/embeddings`` with the prompts a collection uses: ``embed_query`` gives a text the model's
    query prompt and ``embed_documents`` its document prompt (for models that declare them, as E5 or BGE
    do), so its vectors are those the service's own collections store and search with."""

    model: str | None = None
    """A model of ``GET /v1/models``; optional when the service serves one embedding model."""
    dimensions: int | None = None
    """Keep the leading dimensions (Matryoshka-style), re-normalised."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._service.embed(texts, model=self.model, role="document", dimensions=self.dimensions)

    def embed_query(self, text: str) -> list[float]:
        return self._service.embed([text], model=self.model, role="query", dimensions=self.dimensions)[0]


class RayprismVectorStore(VectorStore):
    """A rayprism collection as a LangChain vector store.

    Metadata keys that are fields of the collection are stored as those fields; the others go into the
    json field ``metadata_field`` (see :mod:`rayprism.integrations._documents`). ``filter`` arguments are
    rayprism filter expressions (``'section == "net" and metadata["year"] > 2020'``). ``mode`` is the
    collection's default (hybrid with BM25, else dense) unless given here or per search.
    """

    def __init__(self, collection: str, *, url: str = DEFAULT_URL, api_key: str | None = None,
                 client: Client | None = None, metadata_field: str | None = None, mode: str | None = None):
        self._service = Service(url, api_key=api_key, client=client)
        self._layout = Layout.open(self._service, collection, metadata_field)
        self.mode = mode

    @property
    def collection(self) -> str:
        return self._layout.collection

    @property
    def embeddings(self) -> RayprismEmbeddings:
        """The collection's own model, with the prompts the collection uses."""
        return RayprismEmbeddings(client=self._service.client, model=self._layout.model)

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Upsert by id (new ids: random UUIDs); an id stored already is replaced."""
        texts = list(texts)
        metadatas = metadatas or [{}] * len(texts)
        ids = [document_id or str(uuid.uuid4()) for document_id in (ids or [None] * len(texts))]
        if not len(texts) == len(metadatas) == len(ids):
            raise ValueError(f"{len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids: give one each")
        self._service.upsert(self.collection, [self._layout.document(document_id, text, metadata)
                                               for document_id, text, metadata in zip(ids, texts, metadatas)])
        return ids

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """As :meth:`add_texts`; a document's own ``id`` is kept unless ``ids`` are given."""
        ids = kwargs.pop("ids", None) or [document.id for document in documents]
        return self.add_texts([document.page_content for document in documents],
                              [document.metadata for document in documents], ids=ids, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete by id; ids that are not stored are ignored."""
        if ids is None:
            raise ValueError("delete needs ids (DELETE /v1/collections/{name} drops the whole collection)")
        self._service.delete(self.collection, ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents of those ids that exist, in the order given."""
        found = (self._service.document(self.collection, document_id) for document_id in ids)
        return [self._document(stored) for stored in found if stored is not None]

    def similarity_search_with_score(self, query: str, k: int = 4, *, filter: str | None = None,
                                     mode: str | None = None, **kwargs: Any) -> list[tuple[Document, float]]:
        """The k best documents with the service's score (higher is better: cosine for ``dense``, the
        fused score for ``hybrid``, BM25 for ``sparse``). Other keyword arguments go into the search body
        (``fusion``, ``candidates``, ``rerank``...)."""
        return self._search(query, k, filter=filter, mode=mode or self.mode, **kwargs)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [document for document, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, *, filter: str | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """A dense search by a vector of the collection model's space (such as ``embeddings.embed_query``'s)."""
        return self._search({"vector": embedding}, k, filter=filter, mode="dense", **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return [document for document, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      **kwargs: Any) -> list[Document]:
        """The search's ``fetch_k`` best (hybrid where that is the mode), then k of them picked for relevance
        to the query and difference from those picked before, on the collection model's vectors."""
        candidates = self.similarity_search(query, min(fetch_k, SEARCH_PAGE), **kwargs)
        return self._diverse(self.embeddings.embed_query(query), candidates, k, lambda_mult)

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, **kwargs: Any) -> list[Document]:
        candidates = self.similarity_search_by_vector(embedding, min(fetch_k, SEARCH_PAGE), **kwargs)
        return self._diverse(embedding, candidates, k, lambda_mult)

    def _search(self, query: str | dict, k: int, **options: Any) -> list[tuple[Document, float]]:
        hits = self._service.search(self.collection, query, k=k, **options)
        return [(self._document({"id": hit["id"], **hit["fields"]}), hit["score"]) for hit in hits]

    def _diverse(self, query_vector: list[float], candidates: list[Document], k: int,
                 lambda_mult: float) -> list[Document]:
        """Maximal marginal relevance among ``candidates``, on their texts' vectors by the collection's model."""
        if not candidates:
            return []
        vectors = self.embeddings.embed_documents([document.page_content for document in candidates])
        chosen = maximal_marginal_relevance(np.asarray(query_vector, dtype=np.float32), vectors,
                                            k=k, lambda_mult=lambda_mult)
        return [candidates[index] for index in chosen]

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings | None = None, metadatas: list[dict] | None = None,
                   *, ids: list[str] | None = None, collection: str | None = None, model: str | None = None,
                   fields: dict[str, str] | None = None, metadata_field: str | None = "metadata",
                   url: str = DEFAULT_URL, api_key: str | None = None, client: Client | None = None,
                   **kwargs: Any) -> RayprismVectorStore:
        """Create ``collection`` when it does not exist (``model``, default ``embedding``'s when it is a
        :class:`RayprismEmbeddings`; typed ``fields``; and ``metadata_field``, a json field for the other
        metadata keys), then add the texts. ``collection_config`` (a dict) adds keys to the create body."""
        if collection is None:
            raise ValueError("from_texts needs collection=, the name of the rayprism collection")
        service = Service(url, api_key=api_key, client=client)
        model = model or (embedding.model if isinstance(embedding, RayprismEmbeddings) else None)
        create = {"fields": fields or {}, **({"model": model} if model else {}), **kwargs.pop("collection_config", {})}
        Layout.open(service, collection, metadata_field, create=create)
        store = cls(collection, client=service.client, metadata_field=metadata_field, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def _document(self, stored: dict[str, Any]) -> Document:
        text, metadata = self._layout.text_and_metadata(stored)
        return Document(id=str(stored["id"]), page_content=text, metadata=metadata)


class RayprismRerank(Connected, BaseDocumentCompressor):
    """Reorders documents by a reranker of the service (``POST /v1/rerank``), keeping the best ``top_n``;
    each keeps its score as ``metadata["relevance_score"]``."""

    model: str | None = None
    """A ``kind: reranker`` model; optional when the service serves one."""
    top_n: int | None = 3
    """Documents kept; None keeps all, reordered."""

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        results = self._service.rerank(query, [document.page_content for document in documents],
                                       model=self.model, top_n=self.top_n)
        return [_with_score(documents[result["index"]], result["relevance_score"]) for result in results]


def _with_score(document: Document, score: float) -> Document:
    """A copy: the caller's document is left as it was."""
    return Document(id=document.id, page_content=document.page_content,
                    metadata={**document.metadata, "relevance_score": score})
