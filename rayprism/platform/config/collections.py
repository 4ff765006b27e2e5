"""A Milvus collection as users declare it: in serve.yaml, in ``POST /v1/collections`` and in a job's output."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rayprism.platform.config.base import IDENTIFIER, StrictModel, full_match, nested_problems
from rayprism.platform.config.models import DEFAULT_MODEL_NAME
from rayprism.platform.models.base import Modality

FieldType = Literal["varchar", "int64", "double", "bool", "json"]
VECTOR_FIELDS = ("dense", "sparse")
"""Field names a collection's vectors take in Milvus; also the names of its search routes."""
BITS_FIELD = "dense_bits"
"""The BINARY_VECTOR field a Milvus server keeps a binary-compressed collection's codes in."""
DOCUMENT_VECTOR_KEY = "vector"
"""The key under which a document may carry its precomputed dense vector (then it is not embedded)."""


class _NoParams(StrictModel):
    pass


class _HnswParams(StrictModel):
    M: int = Field(default=16, ge=2, le=2048)
    efConstruction: int = Field(default=200, ge=1, le=2**31 - 1)


class _IvfFlatParams(StrictModel):
    nlist: int = Field(default=128, ge=1, le=65536)


_INDEX_PARAMS: dict[str, type[StrictModel]] = {
    "FLAT": _NoParams, "HNSW": _HnswParams, "IVF_FLAT": _IvfFlatParams, "AUTOINDEX": _NoParams,
}
"""Build parameters each index type takes, with the ranges Milvus accepts."""


class DenseIndexConfig(StrictModel):
    type: Literal["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = "FLAT"
    metric: Literal["COSINE", "IP", "L2"] = "COSINE"
    params: dict[str, Any] = Field(default_factory=dict)
    """Build parameters, checked against the index type: ``{M, efConstruction}`` for HNSW, ``{nlist}``
    for IVF_FLAT, none for FLAT and AUTOINDEX; Milvus's defaults for those left out."""

    @model_validator(mode="after")
    def _check_params(self) -> DenseIndexConfig:
        try:
            _INDEX_PARAMS[self.type].model_validate(self.params)
        except ValidationError as error:
            allowed = sorted(_INDEX_PARAMS[self.type].model_fields) or "none"
            raise ValueError(f"params for {self.type}: {nested_problems(error)}; it takes {allowed}") from None
        return self


class CompressionConfig(StrictModel):
    """A compressed dense tier: search ranks documents on binary (32× smaller than float32) or
    int8 (4×) codes, then rescores the best ``k × rescore_multiplier`` with their float vectors."""

    type: Literal["binary", "int8"]
    rescore_multiplier: int = Field(default=4, ge=1, le=100)
    """Candidates rescored per hit asked for: 4 keeps ≈0.99 of float Recall@10 for binary MiniLM codes
    (docs/benchmarks.md); higher costs a larger fetch of float vectors per search."""


class CollectionConfig(StrictModel):
    """A Milvus collection: its documents, its metadata fields and the model that embeds them.

    The same keys make up a ``collections:`` entry in serve.yaml and the body of
    ``POST /v1/collections``.
    """

    name: str
    model: str = DEFAULT_MODEL_NAME
    uri: str | None = None
    """A Milvus Lite file or ``http://host:19530``; default: the service's ``store.uri``."""
    text_field: str = "text"
    id_type: Literal["varchar", "int64"] = "varchar"
    fields: dict[str, FieldType] = Field(default_factory=dict)
    """Typed metadata fields, filterable in search; documents may omit them (stored as null)."""
    bm25: bool = True
    """Also index the text for BM25 (needed by the ``sparse`` and ``hybrid`` search modes)."""
    index: DenseIndexConfig = DenseIndexConfig()
    compression: CompressionConfig | None = None
    """Keep the dense vectors in memory as codes only (Milvus Lite's in-memory mirror, or a binary
    field on a Milvus server) and rescore exactly; COSINE and IP metrics."""
    modality: Modality = "text"
    """What a document's vector is made from: its text, or an image or audio item."""
    media_field: str | None = None
    """Image and audio collections: the document key that carries the item (a ``data:`` URI); default:
    the modality's name. The item is embedded, not stored: keep e.g. a ``uri`` field to find the original.
    The text field then holds an optional caption (searchable with BM25)."""

    @property
    def media_key(self) -> str | None:
        """The document key holding the item to embed; None for text collections."""
        return None if self.modality == "text" else self.media_field or self.modality

    @field_validator("name")
    @classmethod
    def _check_collection_name(cls, name: str) -> str:
        if not full_match(IDENTIFIER, name):
            raise ValueError("must start with a letter or '_' and use only letters, digits and '_'")
        return name

    @field_validator("text_field")
    @classmethod
    def _check_text_field(cls, name: str) -> str:
        if not full_match(IDENTIFIER, name) or name in ("id", *VECTOR_FIELDS, BITS_FIELD, DOCUMENT_VECTOR_KEY):
            raise ValueError(f"must be a field name other than id, {', '.join(VECTOR_FIELDS)}, {BITS_FIELD}, "
                             f"{DOCUMENT_VECTOR_KEY}")
        return name

    @model_validator(mode="after")
    def _check_media_field(self) -> CollectionConfig:
        if self.modality == "text" and self.media_field is not None:
            raise ValueError("media_field is for image and audio collections (set modality)")
        key = self.media_key
        if key is not None and (not full_match(IDENTIFIER, key) or key in ("id", self.text_field, *VECTOR_FIELDS,
                                                                            BITS_FIELD, DOCUMENT_VECTOR_KEY, *self.fields)):
            raise ValueError(f"media_field {key!r} must be a field name of its own")
        return self

    @model_validator(mode="after")
    def _check_compression(self) -> CollectionConfig:
        if self.compression is not None and self.index.metric not in ("COSINE", "IP"):
            raise ValueError(f"compression ranks by inner product: it needs metric COSINE or IP, not {self.index.metric}")
        return self

    @model_validator(mode="after")
    def _check_field_names(self) -> CollectionConfig:
        reserved = ["id", self.text_field, *VECTOR_FIELDS, BITS_FIELD, DOCUMENT_VECTOR_KEY]
        for name in self.fields:
            if not full_match(IDENTIFIER, name):
                raise ValueError(f"field name {name!r} must start with a letter or '_' and use letters, digits, '_'")
            if name in reserved:
                raise ValueError(f"field name {name!r} is reserved ({', '.join(reserved)})")
        return self
