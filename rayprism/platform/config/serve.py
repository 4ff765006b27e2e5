"""``rayprism serve`` configuration: serve.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from rayprism.platform.api.keys import ApiKey, digest_of, plain_key, valid_scope
from rayprism.platform.config.base import (
    CustomResources,
    NonNegativeFloat,
    PositiveInt,
    StrictModel,
    check_unique,
    is_lite_uri,
    load_config,
    valid_name,
)
from rayprism.platform.config.collections import CollectionConfig
from rayprism.platform.config.models import ModelConfig
from rayprism.platform.constants import API_KEYS_VARIABLE
from rayprism.platform.errors import ConfigError

DEFAULT_STORE_URI = "./data/rayprism.db"
DEFAULT_MIN_FREE_MB = 256
"""Free disk a Milvus Lite store keeps for its flushes: writes are refused (507) below it."""
DEFAULT_AUDIT_LOG = "./data/audit.jsonl"
DEFAULT_BATCHES_DIR = "./data/batches"


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


class GroupReplicasConfig(ReplicasConfig):
    """A model group's bounds: ``min: 0`` lets an idle group give its resources back."""

    min: Annotated[int, Field(ge=0)] = 1
    idle_s: Annotated[float, Field(gt=0)] = 300
    """How long a group waits without requests before it scales down (to zero when ``min`` is 0)."""


class DeploymentConfig(StrictModel):
    """Resources of one serving replica: it answers HTTP and holds every model no group takes."""

    num_cpus: Annotated[float, Field(ge=0)] = 1
    num_gpus: Annotated[float, Field(ge=0)] = 0
    resources: CustomResources = Field(default_factory=dict)
    """Custom Ray resources each serving replica needs: it runs only on nodes that have them."""
    replicas: ReplicasConfig = ReplicasConfig()
    max_ongoing_requests: PositiveInt = 512
    graceful_shutdown_timeout_s: NonNegativeFloat = 10
    """How long a stopping replica may finish requests in flight."""
    health_check_period_s: Annotated[float, Field(gt=0)] = 1
    """How often Serve asks each replica (serving, store, groups) whether it is alive: Serve learns of a
    crashed replica only through this check, so it also bounds how long a crash goes unnoticed
    (Serve's own default, 10 s, left a killed replica unreplaced for that long)."""


class GroupConfig(StrictModel):
    """Models that run in a deployment of their own (e.g. on a GPU, or scaled to zero when idle),
    reached by the serving replicas through Serve handles."""

    name: str
    models: list[str] = Field(min_length=1)
    num_cpus: Annotated[float, Field(ge=0)] = 1
    num_gpus: Annotated[float, Field(ge=0)] = 0
    """Fractions share a GPU between groups (e.g. 0.5)."""
    resources: CustomResources = Field(default_factory=dict)
    """Custom Ray resources each replica of the group needs, e.g. ``{gpu_node: 1}``: the group runs
    only on nodes that have them."""
    replicas: GroupReplicasConfig = GroupReplicasConfig()
    max_ongoing_requests: PositiveInt = 256
    start_timeout_s: Annotated[float, Field(gt=0)] = 120
    """How long a request waits for a group at zero to start a replica before answering 503."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return valid_name(name)


MIN_API_KEY_LENGTH = 16
Key = Annotated[str, Field(min_length=MIN_API_KEY_LENGTH)]


class RateConfig(StrictModel):
    """A key's quota (docs/api.md, "Quotas"): requests and inputs per second for the whole service, with room for
    a burst of ``burst_s`` seconds' worth at once. Either limit may be left out (no limit on it)."""

    requests_per_s: Annotated[float, Field(gt=0)] | None = None
    inputs_per_s: Annotated[float, Field(gt=0)] | None = None
    """Inputs of ``/v1/embeddings``, documents of ``/v1/rerank`` and of a documents upsert."""
    burst_s: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _some_limit(self) -> RateConfig:
        if self.requests_per_s is None and self.inputs_per_s is None:
            raise ValueError("rate needs requests_per_s, inputs_per_s or both")
        return self


class ApiKeyConfig(StrictModel):
    """A named key with scopes (docs/api.md, "API keys and scopes"), given one of three ways: ``key`` (its text),
    ``sha256`` (only its hex digest: the config then holds nothing that opens the service) or ``key_env`` (the
    variable that holds it where the service runs, e.g. filled from a Kubernetes Secret)."""

    name: Annotated[str, AfterValidator(valid_name)]
    """What logs, errors and (later) metrics show: never the key."""
    key: Key | None = Field(default=None, repr=False)
    sha256: Annotated[str, Field(pattern="^[0-9a-fA-F]{64}$")] | None = None
    key_env: str | None = None
    scopes: list[Annotated[str, AfterValidator(valid_scope)]] = Field(min_length=1)
    rate: RateConfig | None = None
    """The key's quota; none: only the service's own overload limits apply."""

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyConfig:
        given = [source for source in ("key", "sha256", "key_env") if getattr(self, source) is not None]
        if len(given) != 1:
            raise ValueError(f"API key {self.name!r} needs exactly one of key, sha256, key_env (given: {given})")
        return self

    def resolved(self) -> ApiKey:
        """The key, its variable read now (in the process that checks keys)."""
        if self.sha256 is not None:
            return ApiKey(self.name, bytes.fromhex(self.sha256), tuple(self.scopes))
        key = self.key if self.key_env is None else os.environ.get(self.key_env, "")
        if self.key_env is not None and len(key) < MIN_API_KEY_LENGTH:
            raise ConfigError(f"API key {self.name!r}: ${self.key_env} is {'too short' if key else 'not set'} "
                              f"(a key needs at least {MIN_API_KEY_LENGTH} characters)")
        return ApiKey(self.name, digest_of(key), tuple(self.scopes), key)


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_request_bytes: PositiveInt = 8 * 1024 * 1024
    max_inputs_per_request: PositiveInt = 2048
    api_keys: list[Key | ApiKeyConfig] = Field(default_factory=list)
    """Keys accepted as ``Authorization: Bearer <key>``: a bare string may do everything, an entry with a name
    what its scopes allow. ``$RAYPRISM_API_KEYS`` (comma-separated) adds keys that may do everything where the
    service runs, which keeps keys out of config files. None: no authentication."""
    allow_remote_media: bool = False
    """Let image and audio inputs be http(s) URLs that the service fetches (never from loopback,
    private or link-local addresses); off, only ``data:`` URIs are accepted."""
    api_key_routes: Literal["v1", "all"] = "v1"
    """Where a key is needed: every ``/v1`` route (``/health``, ``/metrics`` and ``/docs`` stay open
    for probes and scrapers), or all routes."""
    audit_log: str | None = DEFAULT_AUDIT_LOG
    """The audit trail (docs/api.md, "Audit trail"): one JSON line per change and per refused key, appended by
    every serving replica to this one file (relative to where ``rayprism serve`` starts); none: the log only."""
    audit_log_max_bytes: PositiveInt = 10 * 1024 * 1024
    """The audit file is rotated when a line would take it past this size (``audit.jsonl.1`` … the oldest)."""
    audit_log_backups: Annotated[int, Field(ge=0)] = 5
    """Rotated audit files kept besides the current one."""
    ingress: Literal["direct", "proxy"] = "direct"
    """How HTTP reaches the serving replicas when ``rayprism serve`` starts Ray itself: ``direct``,
    each replica answers HTTP (Ray Serve's direct ingress: one replica on ``port``, several behind
    Ray's bundled HAProxy on ``port``); ``proxy``, Ray Serve's own HTTP proxy on ``port`` forwards
    every request to a replica (one more hop; docs/benchmarks.md measures both). A running cluster
    that ``rayprism serve --address`` joins keeps its own setting."""

    @field_validator("api_keys")
    @classmethod
    def _unique_key_names(cls, keys: list[str | ApiKeyConfig]) -> list[str | ApiKeyConfig]:
        check_unique("API key", [key.name for key in keys if isinstance(key, ApiKeyConfig)])
        return keys

    def resolved_api_keys(self) -> list[ApiKey]:
        """The configured keys and those in ``$RAYPRISM_API_KEYS`` of this process; a bare string is named by
        where it came from (``api_keys.0``, ``RAYPRISM_API_KEYS.1``), as logs show it."""
        from_environment = [key.strip() for key in os.environ.get(API_KEYS_VARIABLE, "").split(",") if key.strip()]
        if any(len(key) < MIN_API_KEY_LENGTH for key in from_environment):
            raise ConfigError(f"${API_KEYS_VARIABLE}: every key needs at least {MIN_API_KEY_LENGTH} characters")
        keys = [plain_key(f"api_keys.{index}", key) if isinstance(key, str) else key.resolved()
                for index, key in enumerate(self.api_keys)]
        keys += [plain_key(f"{API_KEYS_VARIABLE}.{index}", key) for index, key in enumerate(from_environment)]
        names_by_digest: dict[bytes, list[str]] = {}
        for key in keys:
            names_by_digest.setdefault(key.digest, []).append(key.name)
        repeated = [names for names in names_by_digest.values() if len(names) > 1]
        if repeated:
            raise ConfigError(f"the same key is given more than once, as {repeated[0]}: give each key once, "
                              "with the scopes it needs")
        return keys

    def rates(self) -> dict[str, RateConfig]:
        """Each named key's quota, by the key's name."""
        return {key.name: key.rate for key in self.api_keys if isinstance(key, ApiKeyConfig) and key.rate is not None}


class BatchesConfig(StrictModel):
    """The OpenAI Batch API (``/v1/files``, ``/v1/batches``): where its files live, their limits, and how a
    batch shares the models with online requests (docs/api.md, "Batches")."""

    dir: str = DEFAULT_BATCHES_DIR
    """Uploaded files, batch records, their progress and output files (relative to where ``rayprism serve``
    starts). Every serving replica reads and writes it: on a cluster, a directory they all share."""
    max_file_bytes: PositiveInt = 200 * 1024 * 1024
    """Largest file ``POST /v1/files`` takes (OpenAI's limit: 200 MB); a larger one is a 413."""
    max_lines: PositiveInt = 50_000
    """Most request lines in one batch's input file (OpenAI's limit); a file with more is refused on upload."""
    lines_per_unit: PositiveInt = 200
    """Lines a batch job handles as one unit: written whole, and never redone once written (a restart
    redoes at most the units in flight)."""
    workers: PositiveInt = 4
    """Ray Data actors that send a batch's units to the serving replicas, each one unit at a time: twice the
    shipped config's replicas, so that whichever replica a unit lands on, each has one to work on while another
    unit's output is written (each replica's share of batch lines bounds what they cost online traffic)."""
    background_inputs: PositiveInt = 16
    """Inputs of batch lines a replica lets wait for its model at once while no online request came lately (the
    default: one forward pass of the default ``forward_batch_size``, the longest an online request then waits)."""
    busy_inputs: PositiveInt = 1
    """The same while online requests came within ``quiet_s``: a batch line enters only in a gap between online
    requests, so an online request waits behind at most a forward pass of this many batch inputs."""
    online_gap_s: NonNegativeFloat = 0.05
    """A gap between online requests shorter than this is no gap: online requests coming back to back pause the
    batch."""
    quiet_s: NonNegativeFloat = 1.0
    """How long after the last online embeddings request a replica gives batch lines their full share again."""


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
    min_free_mb: Annotated[int, Field(ge=0)] = DEFAULT_MIN_FREE_MB
    """Milvus Lite only: refuse writes (507, ``store_full``) while the store's disk has less free than this,
    so a full disk never fails Lite half-way through sealing rows already acknowledged; 0 turns it off.
    A Milvus server guards its own disk (its disk quota); its refusal is a 507 too."""
    replicas: PositiveInt = 1
    """Store processes (Serve replicas) sharing the searches and writes: more than one needs a Milvus server (a
    Lite file admits one process). They share one coordinator for what must be single: the newest write of each
    collection (so every replica's reads see it) and re-embedding's write freeze, change logs and job records."""

    @model_validator(mode="after")
    def _check_replicas(self) -> StoreConfig:
        if self.replicas > 1 and is_lite_uri(self.uri):
            raise ValueError(f"store.replicas ({self.replicas}) must be 1 with a Milvus Lite file (store.uri "
                             f"{self.uri!r}): one process may open a Lite file; several store replicas need a Milvus "
                             "server (store.uri: http://host:19530)")
        return self


class SeedConfig(StrictModel):
    """Documents loaded into an empty collection when the service starts: a first experience."""

    collection: str
    files: list[str] = Field(min_length=1)
    """Files, folders or glob patterns, relative to the working directory, read as ``rayprism ingest`` reads
    them (Markdown, text, HTML, PDF): one document per file, with the file fields the collection declares."""


class ServeConfig(StrictModel):
    server: ServerConfig = ServerConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    models: list[ModelConfig] = Field(default_factory=lambda: [ModelConfig()], min_length=1)
    store: StoreConfig = StoreConfig()
    collections: list[CollectionConfig] = Field(default_factory=list)
    seed: SeedConfig | None = None
    deployments: list[GroupConfig] = Field(default_factory=list)
    """Model groups in deployments of their own; models in no group live in every serving replica."""
    batches: BatchesConfig = BatchesConfig()

    @field_validator("models")
    @classmethod
    def _unique_model_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        check_unique("model", [m.name for m in models])
        return models

    @model_validator(mode="after")
    def _check_groups(self) -> ServeConfig:
        check_unique("deployment", [group.name for group in self.deployments])
        models = [m.name for m in self.models]
        grouped = [name for group in self.deployments for name in group.models]
        check_unique("grouped model", grouped)
        unknown = sorted(set(grouped) - set(models))
        if unknown:
            raise ValueError(f"deployments name models that do not exist: {unknown}; models: {models}")
        return self

    @model_validator(mode="after")
    def _check_rates(self) -> ServeConfig:
        replicas = self.deployment.replicas.max
        for name, rate in self.server.rates().items():
            for limit in ("requests_per_s", "inputs_per_s"):
                per_s = getattr(rate, limit)
                if per_s is not None and per_s * rate.burst_s / replicas < 1:
                    raise ValueError(
                        f"API key {name!r}: rate.{limit} ({per_s}) × burst_s ({rate.burst_s}) / deployment.replicas."
                        f"max ({replicas}) is under 1: each replica holds that share of the quota and could never "
                        "admit one; raise the rate or burst_s")
        return self

    def group_of(self, model: str) -> GroupConfig | None:
        """The group a model runs in, or None when it lives in the serving replicas."""
        return next((group for group in self.deployments if model in group.models), None)

    @model_validator(mode="after")
    def _check_collections(self) -> ServeConfig:
        check_unique("collection", [c.name for c in self.collections])
        models = [m.name for m in self.models if m.kind == "embedder"]
        rerankers = [m.name for m in self.models if m.kind == "reranker"]
        for collection in self.collections:
            if collection.model not in models:
                raise ValueError(f"collection {collection.name!r} uses model {collection.model!r}; embedding "
                                 f"models: {models}")
            rerank = collection.search_defaults.rerank if collection.search_defaults else None
            if rerank is not None and (rerank.model not in rerankers if rerank.model else len(rerankers) != 1):
                raise ValueError(f"collection {collection.name!r}: search_defaults.rerank.model {rerank.model!r} must "
                                 f"name one of the reranker models {rerankers} (it may be left out when there is "
                                 "exactly one)")
        lite = [c.name for c in self.collections if c.uri is not None and is_lite_uri(c.uri)]
        if self.store.replicas > 1 and lite:
            raise ValueError(f"store.replicas ({self.store.replicas}) must be 1 while collections live in Milvus Lite "
                             f"files (the uri of {lite}): one process may open a Lite file")
        declared = [c.name for c in self.collections]
        if self.seed is not None and self.seed.collection not in declared:
            raise ValueError(f"seed.collection {self.seed.collection!r} is not declared; collections: {declared}")
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def load_serve_config(path: str | Path | None) -> ServeConfig:
    return ServeConfig() if path is None else load_config(ServeConfig, path)
