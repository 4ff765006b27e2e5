"""LlamaIndex classes over a rayprism service: ``RayprismEmbedding`` (a ``BaseEmbedding``) and
``RayprismVectorStore`` (a ``BasePydanticVectorStore`` over a collection). Install with
``pip install 'rayprism[llama-index]'``.

The store is a text store whose service embeds both sides: nodes are stored as text and embedded
by the collection's model, and queries are sent as text (``is_embedding_query`` is off, so a
retriever does not embed them first), searched dense, hybrid (dense + BM25) or sparse.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import PrivateAttr

from rayprism.client import DEFAULT_URL, Client
from rayprism.integrations._documents import Layout, literal
from rayprism.integrations._extras import missing_extra
from rayprism.integrations._service import SEARCH_PAGE, Connected, Service

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import BaseNode, MetadataMode, TextNode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as error:
    raise missing_extra(__name__, "llama-index", error) from error

__all__ = ["RayprismEmbedding", "RayprismVectorStore"]

NODE_RECORD = "_node_content"
"""The metadata key under which LlamaIndex keeps a node it wrote (its class, relationships...)."""

MODES = {VectorStoreQueryMode.DEFAULT: "dense", VectorStoreQueryMode.HYBRID: "hybrid",
         VectorStoreQueryMode.SPARSE: "sparse", VectorStoreQueryMode.TEXT_SEARCH: "sparse"}
"""LlamaIndex's query modes that the service's search answers, and its mode for each."""
COMPARISONS = {FilterOperator.EQ: "==", FilterOperator.NE: "!=", FilterOperator.GT: ">", FilterOperator.GTE: ">=",
               FilterOperator.LT: "<", FilterOperator.LTE: "<="}
MEMBERSHIP = (FilterOperator.IN, FilterOperator.NIN)


class RayprismEmbedding(Connected, BaseEmbedding):
    """``/v1/embeddings``: queries with the model's query prompt, texts with its document prompt (for
    models that declare them), as the service's collections embed them."""

    model: str | None = None
    """A model of ``GET /v1/models``; optional when the service serves one embedding model."""
    dimensions: int | None = None
    """Keep the leading dimensions (Matryoshka-style), re-normalised."""

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        if self.model_name == "unknown":
            self.model_name = self.model or "rayprism"

    @classmethod
    def class_name(cls) -> str:
        return "RayprismEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._service.embed([query], model=self.model, role="query", dimensions=self.dimensions)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._service.embed(texts, model=self.model, role="document", dimensions=self.dimensions)


class RayprismVectorStore(BasePydanticVectorStore):
    """A rayprism collection as a LlamaIndex vector store.

    Node metadata keys that are fields of the collection are stored as those fields; the rest, with
    the node's own record (LlamaIndex's ``_node_content``, ``ref_doc_id``...), in the json field
    ``metadata_field``. A collection that does not exist is created with ``model``, typed ``fields``
    and that json field. Metadata filters become rayprism filter expressions.
    """

    stores_text: bool = True
    is_embedding_query: bool = False
    collection: str
    mode: str | None = None
    """The search mode for LlamaIndex's default query mode: default dense (LlamaIndex's meaning of it);
    ``hybrid`` or ``sparse`` make plain retrievers search that way."""
    _service: Service = PrivateAttr()
    _layout: Layout = PrivateAttr()

    def __init__(self, collection: str, *, url: str = DEFAULT_URL, api_key: str | None = None,
                 client: Client | None = None, metadata_field: str = "metadata", model: str | None = None,
                 fields: dict[str, str] | None = None, mode: str | None = None):
        super().__init__(collection=collection, mode=mode)
        self._service = Service(url, api_key=api_key, client=client)
        create = {"fields": fields or {}, **({"model": model} if model else {})}
        self._layout = Layout.open(self._service, collection, metadata_field, create=create)

    @classmethod
    def class_name(cls) -> str:
        return "RayprismVectorStore"

    @property
    def client(self) -> Client:
        return self._service.client

    def add(self, nodes: list[BaseNode], **kwargs: Any) -> list[str]:
        """Upsert the nodes by id. The collection's model embeds their text (embeddings a node carries are
        not sent: the service's query vectors come from that model, so stored ones must too)."""
        documents = []
        for node in nodes:
            record = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
            documents.append(self._layout.document(node.node_id, node.get_content(MetadataMode.NONE), record))
        self._service.upsert(self._layout.collection, documents)
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="ref_doc_id", value=ref_doc_id)]))

    def delete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                     **delete_kwargs: Any) -> None:
        """Delete the nodes of these ids, or those that match ``filters`` (both: those of the ids that match)."""
        if filters is None:
            self._service.delete(self._layout.collection, node_ids or [])
            return
        # the service lists documents only by search: a filtered search finds them, a page at a time
        while ids := self._matching(node_ids, filters):
            self._service.delete(self._layout.collection, ids)

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes of these ids (those that exist), or those that match ``filters``."""
        if filters is not None:
            node_ids = self._matching(node_ids, filters)
        found = (self._service.document(self._layout.collection, node_id) for node_id in node_ids or [])
        return [self._node(stored) for stored in found if stored is not None]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.mode not in MODES:
            raise ValueError(f"query mode {query.mode.value!r}: rayprism answers {[mode.value for mode in MODES]}")
        mode = self.mode if query.mode == VectorStoreQueryMode.DEFAULT and self.mode else MODES[query.mode]
        if query.query_str:  # the service embeds it (retrievers send it: is_embedding_query is off)
            searched: str | dict = query.query_str
        elif query.query_embedding is not None and mode == "dense":
            searched = {"vector": query.query_embedding}
        else:
            raise ValueError(f"a {mode} query needs query_str (a dense one may give query_embedding instead)")
        hits = self._service.search(self._layout.collection, searched, k=query.similarity_top_k,
                                    mode=mode, filter=self._expression(query.node_ids, query.filters, query.doc_ids))
        nodes = [self._node({"id": hit["id"], **hit["fields"]}) for hit in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=[hit["score"] for hit in hits],
                                      ids=[str(hit["id"]) for hit in hits])

    def _matching(self, node_ids: list[str] | None, filters: MetadataFilters) -> list[str]:
        """Up to a page of ids of stored nodes that match: a dense search of any text with the filter
        answers every match up to its k."""
        expression = self._expression(node_ids, filters)
        hits = self._service.search(self._layout.collection, "*", k=SEARCH_PAGE, mode="dense", filter=expression,
                                    output_fields=[])
        return [hit["id"] for hit in hits]

    def _expression(self, node_ids: list[str] | None, filters: MetadataFilters | None,
                    doc_ids: list[str] | None = None) -> str | None:
        parts = [f"id in {literal(node_ids)}"] if node_ids else []
        if doc_ids:
            parts.append(f"{self._layout.field_expression('ref_doc_id')} in {literal(doc_ids)}")
        if filters is not None and filters.filters:
            parts.append(self._filters(filters))
        return " and ".join(f"({part})" for part in parts) or None

    def _filters(self, filters: MetadataFilters) -> str:
        parts = [self._filters(item) if isinstance(item, MetadataFilters) else self._filter(item)
                 for item in filters.filters]
        if filters.condition == FilterCondition.NOT:
            return "not (" + " and ".join(f"({part})" for part in parts) + ")"
        return f" {filters.condition.value} ".join(f"({part})" for part in parts)

    def _filter(self, item: MetadataFilter) -> str:
        field = self._layout.field_expression(item.key)
        if item.operator in COMPARISONS:
            return f"{field} {COMPARISONS[item.operator]} {literal(item.value)}"
        if item.operator in MEMBERSHIP:
            negation = "not " if item.operator == FilterOperator.NIN else ""
            if field == item.key:
                return f"{negation}({field} in {literal(item.value)})"
            # Milvus takes ``in`` on fields only: a key in the json field is compared with each value
            return negation + "(" + " or ".join(f"{field} == {literal(value)}" for value in item.value) + ")"
        if item.operator == FilterOperator.CONTAINS:
            return f"json_contains({field}, {literal(item.value)})"
        raise ValueError(f"metadata filter operator {item.operator.value!r} has no rayprism filter; use one of "
                         f"{[operator.value for operator in (*COMPARISONS, *MEMBERSHIP, FilterOperator.CONTAINS)]}")

    def _node(self, stored: dict[str, Any]) -> BaseNode:
        text, metadata = self._layout.text_and_metadata(stored)
        if NODE_RECORD not in metadata:  # a document another writer stored (`rayprism ingest`, the API, a job)
            return TextNode(id_=str(stored["id"]), text=text, metadata=metadata)
        node = metadata_dict_to_node(metadata, text=text)
        node.id_ = str(stored["id"])
        return node
