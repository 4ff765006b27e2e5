"""Request bodies of the HTTP API, validated straight from the raw JSON bytes.

Shapes follow OpenAI where OpenAI defines them. Parsing errors become the OpenAI
error shape through :func:`parse_body`: malformed JSON is a 400, a body that does
not fit the schema a 422 naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from rayprism.platform.codecs.output import OutputDtype
from rayprism.platform.config.base import Identifier, Integer, bounded
from rayprism.platform.config.search import (  # noqa: F401  (RerankStage: part of this schema)
    DEFAULT_FUSION,
    MAX_CANDIDATES,
    Fusion,
    RerankStage,
    SearchDefaults,
)
from rayprism.platform.constants import REEMBED_BATCH_SIZE, REEMBED_MAX_BATCH_SIZE
from rayprism.platform.errors import InvalidInputError, UnprocessableError
from rayprism.platform.models.base import Modality
from rayprism.platform.reembed_record import Evaluation
from rayprism.platform.store.vocabulary import (
    ID_MAX_BYTES,
    INT64_MAX,
    INT64_MIN,
    MAX_PASSAGES,
    SearchMode,
)

_INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


def _whole(value: Any) -> bool:
    """A JSON integer: 3 and 3.0 alike (JSON Schema's ``integer``), never a bool or a string."""
    return not isinstance(value, bool) and (isinstance(value, int) or isinstance(value, float) and value.is_integer())


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_whole(token) for token in value)


INT32_MAX = 2**31 - 1
TokenIds = Annotated[list[bounded(ge=0, le=INT32_MAX)], Field(min_length=1)]
"""One input as token ids: non-negative, and int32 as tokenizers and torch embeddings index them."""
Inputs = Annotated[list[StrictStr], Field(min_length=1)] | Annotated[list[TokenIds], Field(min_length=1)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str | None = None
    """Optional when the service has exactly one model."""
    input: Inputs
    """Normalised to a list: one string or one token-id list becomes a list of one."""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: bounded(gt=0) | None = None
    output_dtype: OutputDtype = "float"
    """``int8``/``uint8``: one integer per dimension, over the model's calibrated ranges (``int8_ranges`` in its
    config); ``binary``/``ubinary``: the sign bits packed eight dimensions to an integer, as sentence-transformers'
    ``quantize_embeddings`` (384 dimensions answer 48). Applied after ``dimensions``; integers come as JSON numbers
    (with ``encoding_format: base64`` a 400)."""
    tokenizer: Literal["model"] | None = None
    """Whose token ids ``input`` holds: ``model``, the model's own. Token-id input without it is a 400, because
    clients that tokenise for OpenAI (LangChain's ``OpenAIEmbeddings``) send OpenAI's ids, which would embed as
    other words."""
    modality: Modality = "text"
    prompt_name: str | None = None
    """One of the model's prompts (``GET /v1/models`` lists them); default: the model's default prompt."""
    truncate: StrictBool = True
    """A text longer than the model reads (``max_input_tokens`` in ``GET /v1/models``, the prompt and special
    tokens included) is cut to fit, and ``usage`` counts what was embedded; ``false``: such a text is a 400
    naming it, its length in tokens and the limit. Token-id inputs alike; images and audio are not cut."""
    user: str | None = None

    @field_validator("input", mode="before", json_schema_input_type=StrictStr | TokenIds | Inputs)
    @classmethod
    def _normalise_input(cls, value: Any) -> list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be empty")
            if all(isinstance(item, str) for item in value) or all(_is_token_ids(item) for item in value):
                return value
            if _is_token_ids(value):
                return [value]
        raise ValueError(f"must be {_INPUT_SHAPES}")


class RerankRequest(BaseModel):
    """``POST /v1/rerank``, as Cohere, Jina and TEI clients send it."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    """Optional when the service has exactly one reranker."""
    query: Annotated[str, Field(min_length=1)]
    documents: list[StrictStr] = Field(min_length=1)
    top_n: bounded(gt=0) | None = None
    """Return the best ``top_n``; default: every document."""
    return_documents: StrictBool = False
    """Return each document's text with its score."""
    truncate: StrictBool = True
    """A (query, document) pair longer than the model reads (``max_input_tokens`` in ``GET /v1/models``) is cut
    to fit, the longer side first, and ``usage`` counts what was scored; ``false``: such a pair is a 400 naming
    the document, the pair's length in tokens and the limit."""


RequestT = TypeVar("RequestT", bound=BaseModel)


_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
"""Field names; other location parts are pydantic's names for union members (``constrained-str``)."""


def _most_telling(errors: list[dict]) -> dict:
    """For a value that fits no member of a union, the member that came closest: an error about the
    content (a missing key, a failed check) says more than "should be a valid string"."""
    return next((error for error in errors if not error["type"].endswith("_type")), errors[0])


def parse_body(schema: type[RequestT], body: bytes) -> RequestT:
    try:
        return schema.model_validate_json(body)
    except ValidationError as error:
        raise request_error(error) from None


def request_error(error: ValidationError) -> InvalidInputError:
    """A body that does not fit its request model, as the error the service answers (the SDK raises the same
    before sending)."""
    first = _most_telling(error.errors())
    if first["type"] == "json_invalid":
        return InvalidInputError(f"request body is not valid JSON: {first['msg']}")
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidInputError("request body must be a JSON object")
    location = ".".join(str(part) for part in first["loc"] if isinstance(part, int) or _FIELD.fullmatch(part))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "field required"
    return UnprocessableError(f"{location or 'body'}: {message}", param=location or None)


DocumentId = Annotated[StrictStr, Field(min_length=1, max_length=ID_MAX_BYTES)] | bounded(ge=INT64_MIN, le=INT64_MAX)
"""A varchar id (at most ``ID_MAX_BYTES`` bytes: the schema can only say characters) or an int64 one."""


class MediaQuery(BaseModel):
    """Search by example: one image or one audio item (a ``data:`` URI)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["image"]},
                                                                         {"required": ["audio"]}]})
    image: str = Field(default=None, min_length=1)  # type: ignore[assignment]  # absent, never null
    audio: str = Field(default=None, min_length=1)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _exactly_one(self) -> MediaQuery:
        if (self.image is None) == (self.audio is None):
            raise ValueError("give exactly one of image or audio")
        return self

    @property
    def modality(self) -> Modality:
        return "image" if self.image is not None else "audio"

    @property
    def item(self) -> str:
        return self.image if self.image is not None else self.audio


class VectorQuery(BaseModel):
    """Search by a vector in the collection's space (its model's dimensions): one made elsewhere, such as
    a query embedded once and searched in several collections of the model, or a document's own vector."""

    model_config = ConfigDict(extra="forbid")
    vector: Annotated[list[StrictFloat], Field(min_length=1)] | Annotated[StrictStr, Field(min_length=1)]
    """A list of numbers, or base64 of little-endian float32 (as ``encoding_format: base64`` returns it)."""


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, Field(min_length=1)] | MediaQuery | VectorQuery
    """Text, ``{"image": "data:..."}`` / ``{"audio": "data:..."}`` to search a media collection by example, or
    ``{"vector": [...]}`` to search by a vector of the collection's space (both dense only)."""
    k: Integer = Field(default=10, gt=0, le=1000)
    mode: SearchMode | None = None
    """Default: multivector for a multi-vector collection, else hybrid when the collection has BM25, else dense."""
    filter: str | None = None
    fusion: Fusion = Field(default_factory=lambda: DEFAULT_FUSION)
    candidates: bounded(gt=0, le=MAX_CANDIDATES) | None = None
    """Hits taken from each of dense and sparse before fusion, default max(DEFAULT_CANDIDATES (50), k); in mode multivector the
    documents reranked by MaxSim, default the collection's ``multivector.candidates`` (or k if larger)."""
    output_fields: list[Identifier] | None = None
    """Fields returned with each hit; default: the text and every metadata field. A chunked collection's hit
    has its best piece's text as its text (``GET .../documents/{id}`` has the whole)."""
    passages: Integer = Field(default=1, ge=0, le=MAX_PASSAGES)
    """A chunked collection's hits: how many of the document's best-scoring pieces each shows (as
    ``passages``), best first; 0 for none."""
    rerank: RerankStage | None = None
    """Rescore the best ``rerank.candidates`` hits with a reranker (a cross-encoder), after fusion."""
    model: StrictStr | None = None
    """The model that embeds the query; default (or the collection's own model): the collection's. While a
    re-embedding moves the collection to another model, that model too: the query it embeds searches the
    old index through the job's bridge until the swap, the new index after it."""

    def with_defaults(self, defaults: SearchDefaults | None) -> SearchRequest:
        """This request with each setting it leaves out taken from its collection's search defaults: the one
        place the two meet. A setting the request gives wins, also when it gives it as null (``"rerank": null``:
        no rerank stage; ``"mode": null``: the collection's built-in mode). A search by example or by vector is
        dense and has no text to rerank: it takes neither ``mode`` nor ``rerank`` from the defaults. Default
        ``candidates`` are raised to what the request needs (k, and the rerank stage's candidates), as the
        built-in default is."""
        if defaults is None:
            return self
        given = self.model_fields_set
        settings = ("mode", "fusion", "rerank") if isinstance(self.query, str) else ("fusion",)
        update = {name: getattr(defaults, name) for name in settings
                  if name not in given and getattr(defaults, name) is not None}
        if "candidates" not in given and defaults.candidates is not None:
            rerank = update.get("rerank", self.rerank)
            update["candidates"] = max(defaults.candidates, self.k, rerank.candidates if rerank else 0)
        return self.model_copy(update=update) if update else self


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: list[Any] = Field(min_length=1)


class DeleteDocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[DocumentId] = Field(min_length=1)


class ReembedRequest(BaseModel):
    """``POST /v1/collections/{alias}/reembed``: embed the collection again with ``model`` into a new
    physical collection, then move the alias there."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr
    """An embedding model the service serves."""
    evaluation: Evaluation = Evaluation()
    batch_size: Integer = Field(default=REEMBED_BATCH_SIZE, ge=1, le=REEMBED_MAX_BATCH_SIZE)
    """Documents read, embedded and written per step (and change-log ids replayed per step)."""


class RollbackRequest(BaseModel):
    """``POST /v1/collections/{alias}/rollback`` (the body may be left out: every field has a default)."""

    model_config = ConfigDict(extra="forbid")
    batch_size: bounded(ge=1, le=REEMBED_MAX_BATCH_SIZE) | None = None
    """Change-log ids replayed per step. Default: the batch size of the re-embedding it undoes."""


class AliasRequest(BaseModel):
    """``POST /v1/aliases``: create ``name`` pointing at ``collection``, or repoint it there."""

    model_config = ConfigDict(extra="forbid")
    name: Identifier
    collection: Identifier


SNAPSHOT_PAGE_ROWS = 1000
"""Rows per snapshot page unless a request says otherwise."""


class SnapshotRequest(BaseModel):
    """``POST /v1/collections/{name}/snapshots`` (the body may be left out)."""

    model_config = ConfigDict(extra="forbid")
    page_rows: bounded(ge=1, le=16384) = SNAPSHOT_PAGE_ROWS
    """Rows per page (``GET /v1/snapshots/{id}/pages/{page}``); at most what one Milvus query answers."""
