"""Prometheus metrics of one serving replica, labelled by model (and of one store replica).

Each replica keeps its own registry and answers ``GET /metrics`` from it;
``rayprism_replica_info`` names the replica, so scraping every replica's port
(as Prometheus does behind a load balancer) tells the series apart.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the *_created series double the exposition and nobody reads them

LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class ServiceMetrics:
    def __init__(self, replica: str = ""):
        self.registry = CollectorRegistry(auto_describe=True)
        constant = {"replica": replica}
        common = dict(registry=self.registry, namespace="rayprism")
        self.requests = Counter(
            "requests", "HTTP requests answered", ["model", "endpoint", "status"], **common
        ).labels  # call with label values
        self.latency = Histogram(
            "request_latency_seconds", "Time from request to response", ["model", "endpoint"],
            buckets=LATENCY_BUCKETS_S, **common,
        ).labels
        self.inputs = Counter("inputs", "Inputs embedded", ["model"], **common).labels
        self.tokens = Counter("tokens", "Tokens embedded (after truncation)", ["model"], **common).labels
        self.batch_size = Histogram(
            "batch_size", "Inputs per batch run by the encoder", ["model"], buckets=BATCH_BUCKETS, **common
        ).labels
        self.batch_tokens = Histogram(
            "batch_tokens", "Tokens per batch run by the encoder", ["model"], buckets=TOKEN_BUCKETS, **common
        ).labels
        self.queue_depth = Gauge("queue_depth", "Inputs waiting for a batch", ["model"], **common).labels
        self.queue_wait = Histogram(
            "queue_wait_seconds", "Time from a request's arrival at its model to the start of its first batch",
            ["model"], buckets=LATENCY_BUCKETS_S, **common,
        ).labels
        self.encode_time = Histogram(
            "encode_seconds", "Time the encoder spent on one batch", ["model"], buckets=LATENCY_BUCKETS_S, **common
        ).labels
        self.search_latency = Histogram(
            "search_latency_seconds", "Collection searches, query embedding included", ["collection", "mode"],
            buckets=LATENCY_BUCKETS_S, **common,
        ).labels
        self.store_latency = Histogram(
            "store_call_seconds", "Calls from this replica to the store deployment", ["call"],
            buckets=LATENCY_BUCKETS_S, **common,
        ).labels
        self.store_errors = Counter(
            "store_errors", "Store calls that failed, by HTTP status of the error", ["call", "status"], **common
        ).labels
        self.throttled = Counter(
            "throttled_requests", "Requests refused by an API key's quota, by the key's name and the limit it hit",
            ["key", "limit"], **common,
        ).labels
        self.model_ready = Gauge("model_ready", "1 when the model is loaded and serving", ["model"], **common).labels
        self.info = Gauge("replica_info", "Constant 1, labelled with this replica's id", list(constant), **common)
        self.info.labels(**constant).set(1)

    def observe_batch(self, model: str, inputs: int, tokens: int, seconds: float) -> None:
        self.batch_size(model).observe(inputs)
        self.batch_tokens(model).observe(tokens)
        self.encode_time(model).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StoreMetrics:
    """One store replica's calls, labelled with the replica (``store_replica``): with several store replicas
    each reports these to the coordinator, which /metrics asks (Serve routes a call to any one replica)."""

    def __init__(self, replica: str):
        self.registry = CollectorRegistry(auto_describe=True)
        common = dict(registry=self.registry, namespace="rayprism")
        self.calls = Histogram(
            "store_replica_call_seconds", "Calls this store replica answered, by method", ["store_replica", "call"],
            buckets=LATENCY_BUCKETS_S, **common,
        ).labels
        self.replica = replica

    def observe(self, call: str, seconds: float) -> None:
        self.calls(self.replica, call).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Families:
    """A collector that yields families parsed elsewhere (see :func:`merged_exposition`)."""

    def __init__(self, families: list):
        self._families = families

    def collect(self):
        return iter(self._families)


def merged_exposition(texts: list[bytes]) -> bytes:
    """Several replicas' Prometheus text as one exposition: each family once, with every replica's samples
    (their ``replica`` labels tell them apart). Concatenated texts would repeat families, which scrapers refuse."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, object] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            known = families.setdefault(family.name, family)
            if known is not family:
                known.samples.extend(family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)
