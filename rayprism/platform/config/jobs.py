"""``rayprism embed`` / ``rayprism submit`` configuration: a batch job file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from rayprism.platform.config.base import (
    CustomResources,
    PositiveInt,
    StrictModel,
    check_unique,
    is_lite_uri,
    load_config,
)
from rayprism.platform.config.collections import CollectionConfig
from rayprism.platform.config.models import ModelConfig, threads_for
from rayprism.platform.config.serve import DEFAULT_STORE_URI, load_serve_config
from rayprism.platform.errors import ConfigError
from rayprism.platform.models.base import Modality

InputFormat = Literal["jsonl", "parquet", "csv", "images", "audio", "files"]
MEDIA_FORMATS: dict[str, Modality] = {"images": "image", "audio": "audio"}
"""Formats where every file is one item (its id: the path relative to the input's root)."""
FILES_FORMAT = "files"
"""Documents as files (Markdown, plain text, HTML, PDF): every file one row, its text extracted
(:mod:`rayprism.platform.text.files`), its id the path relative to the input's root."""
_FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


class InputConfig(StrictModel):
    path: str
    """A file, a directory (every file in it, or every file under it for images/audio/files) or a glob, e.g.
    ``data/*.jsonl``, ``photos/**/*.jpg``, ``docs/**/*.md``."""
    format: InputFormat | None = None
    """Default: from the file suffix (.jsonl/.json/.ndjson, .parquet, .csv). ``images`` and ``audio``: each
    file is one item. ``files``: each Markdown, text, HTML or PDF file is one document, whose row holds
    ``id`` (the path relative to the folder, or to a glob's fixed folders), the text (under ``text_field``),
    ``title``, ``path``, ``modified``, ``content_hash`` and ``format``; a file that cannot be read is a bad
    row, reported with its path."""
    id_field: str | None = "id"
    """Column with each row's id; ``null`` derives ids from file and row number (stable across runs)."""
    text_field: str = "text"
    """Column with the text to embed; for image and audio inputs, an optional caption kept with the row."""
    modality: Modality | None = None
    """What is embedded: ``text`` (default), or ``image``/``audio`` from ``media_field`` (a column of bytes
    or ``data:`` URIs) or from the files of an ``images``/``audio`` input."""
    media_field: str | None = None
    """The column holding each row's image or audio item (jsonl/parquet inputs)."""
    sidecar: str | None = None
    """``images``/``audio`` inputs: a jsonl file of metadata, one object per item, keyed by ``id`` (the
    item's path relative to the input's root)."""

    @model_validator(mode="after")
    def _check_media(self) -> InputConfig:
        form = self.resolved_format()
        modality = self.resolved_modality()
        if form == FILES_FORMAT and modality != "text":
            raise ValueError(f"format files holds text documents, not {modality}")
        if form in MEDIA_FORMATS and modality != MEDIA_FORMATS[form]:
            raise ValueError(f"format {form} holds {MEDIA_FORMATS[form]}, not {modality}")
        if form not in MEDIA_FORMATS and modality != "text" and self.media_field is None:
            raise ValueError(f"modality {modality} from a {form} input needs media_field: the column of items")
        if self.sidecar is not None and form not in MEDIA_FORMATS:
            raise ValueError("sidecar is for images and audio inputs; other inputs carry their fields")
        return self

    def resolved_modality(self) -> Modality:
        return self.modality or MEDIA_FORMATS.get(self.resolved_format(), "text")

    def item_field(self) -> str | None:
        """Where a row's image or audio item is (a media folder's rows carry it under the modality's
        name); None when the text is what is embedded."""
        modality = self.resolved_modality()
        return None if modality == "text" else self.media_field or modality

    def resolved_format(self) -> InputFormat:
        if self.format is not None:
            return self.format
        suffix = Path(self.path.rstrip("*")).suffix.lower()
        if suffix not in _FORMAT_BY_SUFFIX:
            raise ValueError(f"cannot tell the format of {self.path!r}; set input.format to jsonl, parquet, csv, "
                             "or files (Markdown, text, HTML and PDF documents)")
        return _FORMAT_BY_SUFFIX[suffix]


class JobModelConfig(ModelConfig):
    """A model spec inline, or ``{name: X, serve_config: path}`` to take model X from a serve config."""

    serve_config: str | None = None
    """A serve config file, relative to this job file, whose model named ``name`` this job uses."""
    prompt_name: str | None = None
    """The model's prompt to prepend to every input (e.g. ``document``); default: the model's default prompt."""


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
    resources: CustomResources = Field(default_factory=dict)
    """Custom Ray resources each encoder actor needs: the job's workers run only on nodes that have them."""
    torch_threads: PositiveInt | None = None
    """Default: ``num_cpus`` (rounded down, at least 1)."""

    def threads(self) -> int:
        return self.torch_threads or threads_for(self.num_cpus)

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
    metadata fields) or a full collection spec as in serve.yaml. A chunked collection (``chunking``) gets
    each document cut into pieces, each embedded and stored on its own, as the service's documents API
    does; the parquet parts then hold one row per piece."""
    uri: str | None = None
    """Milvus for ``collection``: a Lite file (no running service may hold it) or ``http://host:19530``;
    default ``./data/rayprism.db``."""
    writers: Literal["workers", "sink"] | None = None
    """Who writes the rows into ``collection``: ``workers``, each encoder actor its own rows, in parallel (a Milvus
    server only), or ``sink``, the job's one sink actor. Default: ``workers`` into a Milvus server, ``sink`` into
    a Lite file (it admits one process) or a service (it owns its store)."""
    service_url: str | None = None
    """Instead of ``uri``: a running rayprism service (e.g. ``http://127.0.0.1:8000``) whose
    collection receives the documents with their vectors through its API, searchable at once.
    A chunked collection receives the documents' text instead, which the service cuts and embeds
    (its API takes documents, not pieces); the job then reads and checks them in parallel.
    Its API key, if it has one, comes from ``$RAYPRISM_API_KEY``."""
    state_dir: str | None = None
    """Where progress is recorded for resuming; default: the parquet directory, else
    ``./data/jobs/<collection>``."""

    @model_validator(mode="after")
    def _check_some_output(self) -> OutputConfig:
        if self.parquet is None and self.collection is None:
            raise ValueError("set output.parquet, output.collection, or both")
        if self.service_url is not None and self.collection is None:
            raise ValueError("output.service_url needs output.collection: the service's collection to load")
        if self.service_url is not None and self.uri is not None:
            raise ValueError("set output.uri (a Milvus the job writes itself) or output.service_url, not both")
        if self.writers == "workers" and not self._server_takes_workers():
            target = ("no output.collection" if self.collection is None else
                      f"service_url {self.service_url}" if self.service_url else f"uri {self.store_uri}")
            raise ValueError(f"output.writers: workers needs output.collection in a Milvus server (http://host:19530), "
                             f"which takes rows from every worker; this job has {target}: leave writers out")
        return self

    @property
    def store_uri(self) -> str:
        return self.uri or DEFAULT_STORE_URI

    def _server_takes_workers(self) -> bool:
        """Only a Milvus server takes writes from many processes: a Lite file admits one, and a service owns its
        store."""
        return self.collection is not None and self.service_url is None and not is_lite_uri(self.store_uri)

    @property
    def workers_write(self) -> bool:
        """Whether every encoder actor writes its own rows into the collection (:attr:`writers`), rather than
        hand them to the job's one sink actor."""
        return self._server_takes_workers() and self.writers != "sink"

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

    @field_validator("codecs")
    @classmethod
    def _unique_codecs(cls, codecs: list) -> list:
        names = [codec if isinstance(codec, str) else f"matryoshka{codec.matryoshka}" for codec in codecs]
        check_unique("codec", names)
        return codecs


def load_job_config(path: str | Path) -> JobConfig:
    """A job file, its relative paths made absolute against the file's own directory (so a job runs
    the same from any working directory); ``model.serve_config`` pulls the named model's spec from
    that serve config."""
    job = _with_paths_from(Path(path).resolve().parent, load_config(JobConfig, path))
    if job.model.serve_config is None:
        return job
    serve_path = Path(job.model.serve_config)
    served = load_serve_config(serve_path).model(job.model.name)
    if served is None:
        raise ConfigError(f"invalid config {path}: model {job.model.name!r} is not in {serve_path}")
    return job.model_copy(update={"model": JobModelConfig(**served.model_dump(), prompt_name=job.model.prompt_name)})


def _with_paths_from(base: Path, job: JobConfig) -> JobConfig:
    def absolute(value: str | None) -> str | None:
        return value if value is None or Path(value).expanduser().is_absolute() else os.path.normpath(base / value)

    def local_source(source: str) -> str:  # a hub id such as org/name stays as it is
        return os.path.normpath(base / source) if source.startswith(("./", "../")) else source

    output = job.output
    return job.model_copy(update={
        "input": job.input.model_copy(update={"path": absolute(job.input.path), "sidecar": absolute(job.input.sidecar)}),
        "model": job.model.model_copy(update={"source": local_source(job.model.source),
                                              "serve_config": absolute(job.model.serve_config)}),
        "output": output.model_copy(update={
            "parquet": absolute(output.parquet), "state_dir": absolute(output.state_dir),
            "uri": absolute(output.uri) if output.uri and is_lite_uri(output.uri) else output.uri,
        }),
    })
