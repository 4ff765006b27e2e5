"""A Milvus collection as users declare it: in serve.yaml, in ``POST /v1/collections`` and in a job's output."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rayprism.platform.config.base import (
    IDENTIFIER,
    IDENTIFIER_RULE,
    Identifier,
    Integer,
    StrictModel,
    bounded,
    full_match,
    nested_problems,
)
from rayprism.platform.config.models import DEFAULT_MODEL_NAME
from rayprism.platform.config.search import SearchDefaults
from rayprism.platform.models.base import Modality
from rayprism.platform.store.vocabulary import Metric

FieldType = Literal["varchar", "int64", "double", "bool", "json"]
DENSE_FIELD = "dense"
"""The FLOAT_VECTOR field holding a document's embedding; also the name of its search route."""
SPARSE_FIELD = "sparse"
"""The SPARSE_FLOAT_VECTOR field Milvus fills with BM25 weights of the text field; also a route's name."""
VECTOR_FIELDS = (DENSE_FIELD, SPARSE_FIELD)
"""Field names a collection's vectors take in Milvus; also the names of its search routes."""
BITS_FIELD = "dense_bits"
"""The BINARY_VECTOR field a Milvus server keeps a binary-compressed collection's codes in."""
DOCUMENT_VECTOR_KEY = "vector"
"""The key under which a document may carry its precomputed dense vector (then it is not embedded)."""
DOCUMENT_ID_FIELD = "doc_id"
"""A chunked collection's pieces: the id of the document a piece belongs to (the primary key is the piece's)."""
PIECE_INDEX_FIELD = "piece_index"
"""A piece's place in its document, from 0."""
PIECE_COUNT_FIELD = "piece_count"
"""How many pieces the document had when this piece was written: pieces past it are stale."""
PIECE_START_FIELD = "piece_start"
"""Where a piece's text starts in its document, in characters."""
DOCUMENT_HASH_FIELD = "doc_hash"
"""A digest of the document (text and fields) a piece was cut from: an unchanged document is not cut again."""
PIECE_FIELDS = (DOCUMENT_ID_FIELD, PIECE_INDEX_FIELD, PIECE_COUNT_FIELD, PIECE_START_FIELD, DOCUMENT_HASH_FIELD)
"""The fields a chunked collection's pieces carry besides the document's own."""


class _NoParams(StrictModel):
    pass


class _HnswParams(StrictModel):
    M: Integer = Field(default=16, ge=2, le=2048)
    efConstruction: Integer = Field(default=200, ge=1, le=2**31 - 1)


class _IvfFlatParams(StrictModel):
    nlist: Integer = Field(default=128, ge=1, le=65536)


_INDEX_PARAMS: dict[str, type[StrictModel]] = {
    "FLAT": _NoParams, "HNSW": _HnswParams, "IVF_FLAT": _IvfFlatParams, "AUTOINDEX": _NoParams,
}
"""Build parameters each index type takes, with the ranges Milvus accepts."""


class DenseIndexConfig(StrictModel):
    type: Literal["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = "FLAT"
    metric: Metric = "COSINE"
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
    rescore_multiplier: Integer = Field(default=4, ge=1, le=100)
    """Candidates rescored per hit asked for: 4 keeps ≈0.99 of float Recall@10 for binary MiniLM codes
    (docs/benchmarks.md); higher costs a larger fetch of float vectors per search."""
    int8_ranges: list[list[float]] | None = Field(default=None, exclude_if=lambda ranges: ranges is None)
    """An int8 tier's buckets, ``[minimums, maximums]`` per dimension. Default: calibrated on the first vectors
    written. A backup carries the ones in use, so that a restore encodes every vector to the codes it had. Left out
    of a dumped config while unset, so that a described collection shows the block as it was declared."""

    @model_validator(mode="after")
    def _ranges_fit(self) -> CompressionConfig:
        if self.int8_ranges is None:
            return self
        if self.type != "int8":
            raise ValueError("int8_ranges belong to an int8 tier")
        if len(self.int8_ranges) != 2 or len(self.int8_ranges[0]) != len(self.int8_ranges[1]):
            raise ValueError("int8_ranges must be two lists of one value per dimension: [minimums, maximums]")
        if any(low > high for low, high in zip(*self.int8_ranges)):
            raise ValueError("int8_ranges: a minimum is above its maximum")
        return self


MAX_VECTOR_DIMENSIONS = 32768
"""The widest FLOAT_VECTOR a Milvus server accepts by default (``proxy.maxDimension``)."""
MAX_FDE_BLOCKS = 4 * MAX_VECTOR_DIMENSIONS
"""The widest MUVERA encoding before a final projection (``d_final``): 512 kB per document while encoding."""


class FDEOptions(StrictModel):
    """How a multi-vector collection's token vectors become one MUVERA fixed-dimensional encoding
    (:class:`~rayprism.platform.codecs.muvera.FDEConfig`, whose ``dim`` is the model's token width).

    The default k_sim is 3, not the paper's 5: 8 partitions instead of 32 make the encoding 4× narrower
    (2560 dimensions for d_proj 16 and r_reps 20), which is what Milvus stores, the mirror holds and
    every search scans; ``bench/kernels.py --only fde`` measures both on the Debian 10k corpus."""

    k_sim: Integer = Field(default=3, ge=0, le=16)
    """SimHash hyperplanes per repetition: 2^k_sim partitions."""
    d_proj: Integer = Field(default=16, ge=1, le=4096)
    """Each partition's block is projected to this many dimensions (the identity when equal to the token width)."""
    r_reps: Integer = Field(default=20, ge=1, le=1024)
    """Independent repetitions, concatenated."""
    seed: Integer = Field(default=0, ge=0)
    fill_empty_partitions: bool = True
    """An empty partition of a document takes its token nearest in Hamming distance."""
    d_final: bounded(ge=1, le=MAX_VECTOR_DIMENSIONS) | None = None
    """Count-sketch the encoding down to this many dimensions; None keeps 2^k_sim · d_proj · r_reps."""

    @property
    def output_dimensions(self) -> int:
        return self.d_final or self._blocks

    @property
    def _blocks(self) -> int:
        return (1 << self.k_sim) * self.d_proj * self.r_reps

    @model_validator(mode="after")
    def _check_width(self) -> FDEOptions:
        blocks = f"2^k_sim · d_proj · r_reps = 2^{self.k_sim} · {self.d_proj} · {self.r_reps} = {self._blocks}"
        if self._blocks > MAX_FDE_BLOCKS:
            raise ValueError(f"{blocks} dimensions before any final projection; at most {MAX_FDE_BLOCKS}")
        if self.output_dimensions > MAX_VECTOR_DIMENSIONS:
            raise ValueError(f"the encoding would have {self.output_dimensions} dimensions ({blocks}); Milvus stores "
                             f"at most {MAX_VECTOR_DIMENSIONS}: lower them or set d_final")
        return self


class MultivectorConfig(StrictModel):
    """Late-interaction retrieval: each document's token vectors are kept for an exact MaxSim rerank, and
    their MUVERA encoding is the collection's dense vector, searched for the rerank's candidates."""

    fde: FDEOptions = FDEOptions()
    candidates: Integer = Field(default=200, ge=1, le=16384)
    """Documents taken by their encoding and reranked by MaxSim, unless a search asks for another number
    (``candidates``): 200 hold the exact-Chamfer top-1 document for ≥ 90% of the Debian dev queries."""


class ChunkingConfig(StrictModel):
    """How a chunked collection cuts its documents (the ``chunking`` section of a collection)."""

    max_tokens: Integer = Field(256, ge=16, le=8192)
    """Most tokens in one piece, as the collection model's tokenizer counts them (without special tokens)."""
    overlap_tokens: Integer = Field(32, ge=0, le=4096)
    """About this many tokens repeated between neighbouring pieces."""
    markdown: bool = False
    """Split on Markdown structure (headings, lists, code blocks) and put the headings a piece sits under in
    its context: for Markdown documents, and HTML converted to it (``rayprism ingest`` of files)."""

    @model_validator(mode="after")
    def _overlap_leaves_progress(self) -> ChunkingConfig:
        if self.overlap_tokens > self.max_tokens // 2:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be at most half of max_tokens "
                             f"({self.max_tokens}): each piece must move at least half a piece forward")
        return self


class CollectionConfig(StrictModel):
    """A Milvus collection: its documents, its metadata fields and the model that embeds them.

    The same keys make up a ``collections:`` entry in serve.yaml and the body of
    ``POST /v1/collections``.
    """

    name: Identifier
    model: str = DEFAULT_MODEL_NAME
    uri: str | None = None
    """A Milvus Lite file or ``http://host:19530``; default: the service's ``store.uri``."""
    text_field: Identifier = "text"
    id_type: Literal["varchar", "int64"] = "varchar"
    fields: dict[Identifier, FieldType] = Field(default_factory=dict)
    """Typed metadata fields, filterable in search; documents may omit them (stored as null)."""
    bm25: bool = True
    """Also index the text for BM25 (needed by the ``sparse`` and ``hybrid`` search modes)."""
    index: DenseIndexConfig = DenseIndexConfig()
    compression: CompressionConfig | None = None
    """Keep the dense vectors in memory as codes only (Milvus Lite's in-memory mirror, or a binary
    field on a Milvus server) and rescore exactly; COSINE and IP metrics."""
    multivector: MultivectorConfig | None = None
    """Multi-vector (late-interaction) retrieval with ``mode: multivector``: the dense field holds each
    document's MUVERA encoding (ranked by inner product: metric IP, the default here), its token vectors
    are kept beside the collection, and a search reranks the encoding's candidates by exact MaxSim."""
    modality: Modality = "text"
    """What a document's vector is made from: its text, or an image or audio item."""
    chunking: ChunkingConfig | None = None
    """Cut each document into pieces of at most ``max_tokens`` tokens, each embedded (and indexed for BM25) on
    its own: a search answers documents, ranked by their best piece, with the pieces that matched."""
    media_field: Identifier | None = None
    """Image and audio collections: the document key that carries the item (a ``data:`` URI); default:
    the modality's name. The item is embedded, not stored: keep e.g. a ``uri`` field to find the original.
    The text field then holds an optional caption (searchable with BM25)."""
    search_defaults: SearchDefaults | None = None
    """Settings (mode, fusion, candidates, rerank) every search of the collection uses unless it gives its own.
    Defaults applied to the live collection (``PUT /v1/collections/{name}/search_defaults``, ``rayprism tune
    --apply``) replace this block, whole, until they are removed (``DELETE``): described, the collection shows
    the block in use."""

    @property
    def media_key(self) -> str | None:
        """The document key holding the item to embed; None for text collections."""
        return None if self.modality == "text" else self.media_field or self.modality

    @field_validator("text_field")
    @classmethod
    def _check_text_field(cls, name: str) -> str:
        if name in ("id", *VECTOR_FIELDS, BITS_FIELD, DOCUMENT_VECTOR_KEY):
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

    @model_validator(mode="before")
    @classmethod
    def _multivector_ranks_by_inner_product(cls, data: Any) -> Any:
        """A multi-vector collection's metric defaults to IP: MUVERA encodings approximate MaxSim by
        their inner product, which cosine would distort."""
        if isinstance(data, dict) and data.get("multivector") is not None:
            index = data.get("index")
            if isinstance(index, DenseIndexConfig) and "metric" not in index.model_fields_set:
                data = {**data, "index": index.model_copy(update={"metric": "IP"})}
            elif index is None or isinstance(index, dict) and "metric" not in index:
                data = {**data, "index": {**(index or {}), "metric": "IP"}}
        return data

    @model_validator(mode="after")
    def _check_multivector(self) -> CollectionConfig:
        if self.multivector is None:
            return self
        if self.index.metric != "IP":
            raise ValueError(f"multivector ranks MUVERA encodings by inner product: it needs metric IP, not "
                             f"{self.index.metric}")
        if self.modality != "text":
            raise ValueError(f"multivector takes the token vectors of text; this collection holds {self.modality}")
        if self.compression is not None:
            raise ValueError("multivector and compression cannot be combined: the rerank is exact already")
        return self

    @model_validator(mode="after")
    def _check_chunking(self) -> CollectionConfig:
        if self.chunking is None:
            return self
        if self.modality != "text":
            raise ValueError(f"chunking cuts text; this collection holds {self.modality}")
        if self.multivector is not None:
            raise ValueError("chunking and multivector cannot be combined: a multi-vector document keeps every token")
        if self.text_field in PIECE_FIELDS:
            raise ValueError(f"text_field {self.text_field!r} is reserved in a chunked collection ({', '.join(PIECE_FIELDS)})")
        return self

    @model_validator(mode="after")
    def _check_compression(self) -> CollectionConfig:
        if self.compression is not None and self.index.metric not in ("COSINE", "IP"):
            raise ValueError(f"compression ranks by inner product: it needs metric COSINE or IP, not {self.index.metric}")
        return self

    def search_defaults_problem(self, defaults: SearchDefaults) -> str | None:
        """Why ``defaults`` cannot be this collection's search defaults (a mode it has no route for, a rerank of
        media), or None: the rule the config, a creation and an applied block are all held to."""
        mode = defaults.mode
        if mode == "multivector" and self.multivector is None:
            return f"search_defaults.mode 'multivector' needs a multivector collection; {self.name!r} is not one"
        if self.multivector is not None and mode in ("dense", "hybrid"):
            return (f"search_defaults.mode {mode!r}: collection {self.name!r} is multivector, searched with mode "
                    "multivector (or sparse)")
        if mode in ("hybrid", "sparse") and not self.bm25:
            return f"search_defaults.mode {mode!r} needs BM25, which collection {self.name!r} does not have"
        if defaults.rerank is not None and self.modality != "text":
            return f"search_defaults.rerank scores stored text; collection {self.name!r} holds {self.modality}"
        return None

    @model_validator(mode="after")
    def _check_search_defaults(self) -> CollectionConfig:
        problem = self.search_defaults and self.search_defaults_problem(self.search_defaults)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _check_field_names(self) -> CollectionConfig:
        reserved = ["id", self.text_field, *VECTOR_FIELDS, BITS_FIELD, DOCUMENT_VECTOR_KEY,
                    *(PIECE_FIELDS if self.chunking else ())]
        for name in self.fields:
            if not full_match(IDENTIFIER, name):
                raise ValueError(f"field name {name!r} {IDENTIFIER_RULE}")
            if name in reserved:
                raise ValueError(f"field name {name!r} is reserved ({', '.join(reserved)})")
        return self
