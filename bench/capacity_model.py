"""The capacity model: sizing tables and plots computed from bench/capacity.py's measurements.

Pure arithmetic over the measurement JSON (no Ray, no Milvus, no model): tests/unit/test_capacity_model.py checks
it against hand-computed numbers. Every figure not measured by bench/capacity.py is an :class:`Assumptions` field,
named, with where it comes from; change one and run ``python bench/capacity.py --report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

TIERS = ("float32", "int8", "binary", "fde", "bm25")
TIER_LABELS = {
    "float32": "float32 mirror (384-d)",
    "int8": "int8 codes + float rescoring",
    "binary": "binary codes + float rescoring",
    "fde": "MUVERA: 2,560-d FDE + 64 token vectors",
    "bm25": "BM25 postings (Debian descriptions)",
}
RESCORED = ("int8", "binary")
"""Tiers whose search also fetches its candidates' float vectors from Milvus."""
TARGET_QPS = (100, 1_000, 2_000)
DOCUMENTS = (1_000_000, 10_000_000, 50_000_000)
SEARCH_SIZES = (100_000, 1_000_000, 10_000_000)
GIB = 1 << 30


@dataclass(frozen=True)
class Assumptions:
    """What the tables assume beyond this machine's measurements. Each field's comment names its source."""

    gpu_query_embeddings_per_s: float = 14_200
    """Short inputs one GPU embeds per second with all-MiniLM-L6-v2: the "speed" column of sentence-transformers'
    pretrained-models table (a V100; an A10G or L4 is of the same class for a 6-layer MiniLM). Not measured here: this
    machine has no GPU."""
    gpu_rerank_pairs_per_s: float = 1_800
    """(query, document) pairs one GPU scores per second with cross-encoder/ms-marco-MiniLM-L-6-v2: the "docs / sec"
    column of sentence-transformers' MS MARCO cross-encoder table (a V100), recalled without network access."""
    node_cpus: int = 16
    node_gpus: int = 1
    node_memory_gib: float = 64
    """A GPU node of the size KubeRay examples use (16 vCPU, 64 GiB, 1 GPU, e.g. AWS g5.4xlarge)."""
    utilisation: float = 0.6
    """The share of a core or GPU the plan fills (headroom for p99 latency, bursts and a lost node): a choice."""
    serve_cpu_s_per_request: float = 2 / 1032
    """A serving replica's own CPU per HTTP request: a no-op Ray Serve deployment behind direct ingress answered
    1,032 requests/s on 2 cores (../shared/notes/serving-performance.md); an upper bound (the load generator shared
    those cores)."""
    rerank_pairs: int = 20
    """Candidates a search with rerank scores (``rerank.candidates``-style), when rerank is on."""
    memory_headroom: float = 1.3
    """Memory planned per byte measured (allocator slack, a mirror's arrays growing by doubling): a choice."""


def per_search_cpu_s(tier: dict, rows: float) -> float:
    """CPU seconds of one search of ``rows`` documents on a tier's measured line ``fixed + per_row × rows``."""
    line = tier["search_cpu_s"]
    return max(line["fixed"] + line["per_row"] * rows, 0.0)


def store_cpu_s(measured: dict, tier: str, rows: float) -> float:
    """One search's CPU in the store process: the tier's scan, and a compressed tier's rescoring fetch (Milvus Lite's,
    measured; on a server that work is the server's)."""
    cpu = per_search_cpu_s(measured["tiers"][tier], rows)
    if tier in RESCORED and "rescore_fetch_lite" in measured:
        cpu += rescore_fetch_cpu_s(measured)
    return cpu


def rescore_fetch_cpu_s(measured: dict) -> float:
    """Reading a compressed tier's candidates' float vectors by id from Milvus Lite: the mean over the sizes measured
    (a read by primary key does not grow with the collection: 10k and 40k rows cost the same within noise)."""
    points = measured["rescore_fetch_lite"]["points"]
    return sum(value for _, value in points) / len(points)


def memory_bytes(measured: dict, tier: str, documents: float) -> float:
    """A mirror's memory for ``documents`` (the fitted per-document slope; the small-N intercept left out: at
    millions of documents it is noise, and negative intercepts would flatter the tier)."""
    return measured["tiers"][tier]["memory_bytes"]["per_row"] * documents


def bytes_per_document(measured: dict, tier: str) -> float:
    return measured["tiers"][tier]["memory_bytes"]["per_row"]


@dataclass(frozen=True)
class Plan:
    qps: float
    gpus_query: int
    gpus_rerank: int
    serving_cores: float
    store_cores: float
    store_replicas: int
    nodes: int
    one_store_process_ceiling: float


@dataclass(frozen=True)
class StoreCpu:
    """The store's CPU seconds per search on a Milvus server, measured (bench/store_replicas.py): ``one`` with one
    store replica; ``several`` summed over 2 replicas and their coordinator, which every read asks where to read."""

    one: float
    several: float

    def per_search(self, replicas: float) -> float:
        return self.one if replicas <= 1 else self.several


def plan_server(measured: dict, store_cpu: StoreCpu, qps: float, assumptions: Assumptions,
                rerank: bool = False) -> Plan:
    """Resources for ``qps`` dense or hybrid searches/s on a Milvus server (the server sized by Milvus's own rules):
    GPUs embedding queries (and scoring rerank pairs), serving replicas' cores (request handling and fusion) and
    store replicas (each one process, at most ``utilisation`` of one core; past one replica each search costs what
    several replicas and their coordinator spent together)."""
    a = assumptions
    gpus_query = math.ceil(qps / (a.gpu_query_embeddings_per_s * a.utilisation))
    gpus_rerank = math.ceil(qps * a.rerank_pairs / (a.gpu_rerank_pairs_per_s * a.utilisation)) if rerank else 0
    serving_cores = qps * (a.serve_cpu_s_per_request + measured["fusion"]["cpu_s_per_call"]) / a.utilisation
    store_cores = qps * store_cpu.per_search(qps * store_cpu.one / a.utilisation) / a.utilisation
    store_replicas = math.ceil(store_cores)
    gpus = gpus_query + gpus_rerank
    nodes = max(math.ceil(gpus / a.node_gpus), math.ceil((serving_cores + store_cores) / a.node_cpus))
    return Plan(qps, gpus_query, gpus_rerank, serving_cores, store_cores, store_replicas, nodes,
                1.0 / store_cpu.one)


def cpu_only_cores(measured: dict, qps: float, assumptions: Assumptions) -> float:
    """Cores to embed ``qps`` queries on CPUs (one torch thread each, as measured), at ``utilisation``."""
    return qps * measured["embedding"]["query"]["cpu_s_per_query"] / assumptions.utilisation


def lite_ceiling(measured: dict, tier: str, rows: float) -> float:
    """Hybrid searches/s a Milvus Lite store (one process, so one core's worth of Python) answers from its mirror:
    the dense tier's search, BM25 and fusion each time."""
    cpu = store_cpu_s(measured, tier, rows) + per_search_cpu_s(measured["tiers"]["bm25"], rows) \
        + measured["fusion"]["cpu_s_per_call"]
    return 1.0 / cpu


# --- markdown ---------------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}" if seconds < 0.01 else f"{seconds * 1000:.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _gib(value: float) -> str:
    return f"{value / GIB:,.2f}" if value < 10 * GIB else f"{value / GIB:,.0f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def stage_table(measured: dict) -> str:
    embedding, rerank = measured["embedding"], measured["rerank"]
    rows = [
        ["query embedding (one query)", f"{embedding['query']['tokens_per_query']:.1f} tokens",
         _ms(embedding["query"]["cpu_s_per_query"]), _rate(1 / embedding["query"]["cpu_s_per_query"])],
        ["document embedding, per token (batches of 32)", f"{embedding['document']['tokens_per_document']:.0f} tokens a document",
         _ms(embedding["document"]["cpu_s_per_token"]), _rate(1 / embedding["document"]["cpu_s_per_token"])],
        ["rerank, one pair", f"{rerank['tokens_per_pair']:.0f} tokens", _ms(rerank["cpu_s_per_pair"]),
         _rate(1 / rerank["cpu_s_per_pair"])],
        ["fusion of two lists (weighted)", f"{measured['fusion']['candidates']} hits each",
         _ms(measured["fusion"]["cpu_s_per_call"]), _rate(1 / measured["fusion"]["cpu_s_per_call"])],
    ]
    if "rescore_fetch_lite" in measured:
        cost = rescore_fetch_cpu_s(measured)
        rows.append(["rescoring fetch, 40 float vectors by id from Milvus Lite", "mean of 10k and 40k rows", _ms(cost),
                     _rate(1 / cost)])
    for tier in TIERS:
        line = measured["tiers"][tier]["search_cpu_s"]
        rows.append([f"store search, {TIER_LABELS[tier]}", "fixed + per row",
                     f"{_ms(max(line['fixed'], 0))} + {line['per_row'] * 1e9:.2f} ns × N", "see below"])
    return table(["stage", "input", "CPU ms per call (1 thread)", "calls/s per core"], rows)


def search_rate_table(measured: dict) -> str:
    rows = []
    for tier in TIERS:
        rows.append([TIER_LABELS[tier]] + [_rate(1 / store_cpu_s(measured, tier, n)) for n in SEARCH_SIZES])
    return table(["store search (top 10)"] + [f"N = {n:,}" for n in SEARCH_SIZES], rows)


def memory_table(measured: dict, assumptions: Assumptions) -> str:
    rows = []
    for tier in TIERS:
        rows.append([TIER_LABELS[tier], f"{bytes_per_document(measured, tier):,.0f}"]
                    + [_gib(memory_bytes(measured, tier, n) * assumptions.memory_headroom) for n in DOCUMENTS])
    return table(["tier (in the store's memory)", "bytes per document (measured)"]
                 + [f"GiB at {n / 1e6:,.0f}M (× {assumptions.memory_headroom})" for n in DOCUMENTS], rows)


def milvus_memory_table(dimensions: int = 384) -> str:
    """Milvus's own memory for the vectors it holds, by its published rules of thumb (see the section's text)."""
    rows = []
    for label, per_vector in (("FLAT / IVF_FLAT (raw float32)", dimensions * 4),
                              ("HNSW, M = 16 (raw + ~2M links of 4 B)", dimensions * 4 + 2 * 16 * 4),
                              ("IVF_SQ8 (1 byte a dimension)", dimensions),
                              ("BIN_FLAT / BIN_IVF_FLAT (binary field, 1 bit a dimension)", dimensions // 8)):
        rows.append([label, f"{per_vector:,}"] + [_gib(per_vector * n) for n in DOCUMENTS])
    return table(["Milvus index (384-d)", "bytes per vector"] + [f"GiB at {n / 1e6:,.0f}M" for n in DOCUMENTS], rows)


def plan_table(measured: dict, store_cpu: StoreCpu, assumptions: Assumptions) -> str:
    rows = []
    for qps in TARGET_QPS:
        plain = plan_server(measured, store_cpu, qps, assumptions)
        reranked = plan_server(measured, store_cpu, qps, assumptions, rerank=True)
        rows.append([f"{qps:,}", str(plain.gpus_query), f"{plain.serving_cores:.1f}", str(plain.store_replicas),
                     str(plain.nodes), f"{reranked.gpus_query + reranked.gpus_rerank}", str(reranked.nodes),
                     f"{cpu_only_cores(measured, qps, assumptions):,.0f}"])
    return table(["searches/s", "GPUs (query)", "serving cores", "store replicas", "nodes",
                  f"GPUs with rerank ({assumptions.rerank_pairs} pairs)", "nodes with rerank",
                  "CPU cores instead of GPUs (query embedding)"], rows)


def lite_table(measured: dict) -> str:
    rows = [[TIER_LABELS[tier]] + [_rate(lite_ceiling(measured, tier, n)) for n in SEARCH_SIZES]
            for tier in ("float32", "int8", "binary")]
    return table(["dense tier (+ BM25 + fusion)"] + [f"N = {n:,}" for n in SEARCH_SIZES], rows)


def check_table(measured: dict, check: dict) -> str:
    """The 1M-vector run against the model: memory, CPU per search, p50 and restart."""
    rows = []
    for tier in ("float32", "binary", "int8"):
        if tier not in check:
            continue
        restart = check[tier]["restart"]
        n = restart["rows"]
        predicted_memory = memory_bytes(measured, tier, n)
        predicted_cpu = store_cpu_s(measured, tier, n)
        fit = check[tier].get("restart_fit", {})
        restart_cell = _predicted_measured(fit.get("restart_s"), n, restart["restart_s"])
        restart_cpu_cell = _predicted_measured(fit.get("restart_cpu_s"), n, restart.get("restart_cpu_s"))
        rows.append([TIER_LABELS[tier], f"{n:,}",
                     f"{predicted_memory / 2**20:,.0f} / {restart['rss_delta_bytes'] / 2**20:,.0f} "
                     f"({restart['rss_delta_bytes'] / predicted_memory:.2f})" if restart["rss_delta_bytes"] > 0 else
                     f"{predicted_memory / 2**20:,.0f} / not measurable (Milvus Lite, in the same process, released "
                     f"{-restart['rss_delta_bytes'] / 2**20:,.0f} MiB meanwhile)",
                     f"{_ms(predicted_cpu)} / {_ms(restart['search_cpu_s'])} ({restart['search_cpu_s'] / predicted_cpu:.2f})",
                     f"{restart['search_p50_ms']:.1f} / {restart['search_p99_ms']:.1f}", restart_cpu_cell, restart_cell,
                     f"{restart['open_s']:.0f} + {restart['mirror_build_s']:.0f}"
                     + (f"; from codes {check[tier]['restart_from_codes']['open_s']:.0f} + "
                        f"{check[tier]['restart_from_codes']['mirror_build_s']:.0f}" if isinstance(check[tier].get("restart_from_codes"), dict) else "")])
    return table(["tier", "rows", "mirror MiB predicted / measured (ratio)", "CPU ms per search predicted / measured (ratio)",
                  "p50 / p99 ms (wall)", "restart CPU s predicted / measured (ratio)",
                  "restart wall s predicted / measured (ratio)", "of which: open Lite + build mirror"], rows)


def fill_table(measured: dict, fills: dict) -> str:
    """Mirrors filled in process at a large N (``bench/capacity.py --point TIER N``: the rows a build reads, without
    reading them from Milvus) against the model's lines, fitted at smaller N: memory and CPU per search."""
    rows = []
    for tier in TIERS:
        if tier not in fills:
            continue
        point = fills[tier]
        n = point["rows"]
        memory = memory_bytes(measured, tier, n)
        cpu = per_search_cpu_s(measured["tiers"][tier], n)
        rows.append([TIER_LABELS[tier], f"{n:,}",
                     f"{memory / 2**20:,.0f} / {point['rss_bytes'] / 2**20:,.0f} ({point['rss_bytes'] / memory:.2f})",
                     f"{_ms(cpu)} / {_ms(point['search_cpu_s'])} ({point['search_cpu_s'] / cpu:.2f})"])
    return table(["tier", "rows", "mirror MiB predicted / measured (ratio)",
                  "CPU ms per search (no Milvus fetch) predicted / measured (ratio)"], rows)


def restart_table(check: dict) -> str:
    """Each restart of the check's collections as it grew (the line through the smaller sizes predicts the largest):
    wall and CPU seconds, and CPU per 1,000 rows, which stays flat when the restart is linear in N; beside them, what one
    page of ``query_iterator`` cost on the same collection (how a build read it before: N / 4,096 such pages)."""
    rows = []
    for tier in ("float32", "binary", "int8"):
        if tier not in check:
            continue
        for point in [*check[tier].get("restart_points", []), check[tier]["restart"]]:
            rows.append([TIER_LABELS[tier], f"{point['rows']:,}", f"{point['restart_s']:,.0f}",
                         f"{point['restart_cpu_s']:,.0f}", f"{1000 * point['restart_cpu_s'] / point['rows']:.3f}",
                         f"{point['open_s']:.0f} + {point['mirror_build_s']:.0f}",
                         " / ".join(f"{point[key]:.2f}" if key in point else "—"
                                    for key in ("iterator_page_s", "iterator_page_cpu_s"))])
    return table(["tier", "rows", "restart wall s", "restart CPU s", "CPU s per 1,000 rows",
                  "open Lite + build mirror (wall s)", "one query_iterator page of 4,096 rows, wall / CPU s"], rows)


def _predicted_measured(line: dict | None, rows: float, measured: float | None) -> str:
    """``predicted / measured (measured ÷ predicted)`` for a fitted line at ``rows`` (the tier's restarts at smaller
    sizes); a dash where either is missing."""
    if measured is None:
        return "—"
    if not line:
        return f"— / {measured:,.0f}"
    predicted = line["fixed"] + line["per_row"] * rows
    return f"{predicted:,.0f} / {measured:,.0f} ({measured / predicted:.2f})"


def assumptions_table(assumptions: Assumptions) -> str:
    docs = _field_docs()
    return table(["assumption", "value", "source"],
                 [[f"`{field.name}`", f"{getattr(assumptions, field.name):g}", docs.get(field.name, "")]
                  for field in fields(assumptions)])


def _field_docs() -> dict[str, str]:
    """Each Assumptions field's docstring (the string after it in this file), on one line."""
    import ast

    tree = ast.parse(Path(__file__).read_text())
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Assumptions").body
    docs, last = {}, None
    for node in body:
        if isinstance(node, ast.AnnAssign):
            last = node.target.id
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and last:
            docs[last] = " ".join(node.value.value.split())
            for name in _grouped(body, last):
                docs.setdefault(name, docs[last])
            last = None
    return docs


def _grouped(body: list, documented: str) -> list[str]:
    """Fields declared right before ``documented`` without a docstring of their own share it (node_cpus, ...)."""
    import ast

    names = [node.target.id if isinstance(node, ast.AnnAssign) else None for node in body]
    index = names.index(documented)
    group = []
    while index > 0 and names[index - 1] is not None:
        index -= 1
        group.append(names[index])
    return group


# --- plots --------------------------------------------------------------------------------------------------------


def plots(directory: Path, measured: dict, store_cpu: StoreCpu | None, assumptions: Assumptions) -> list[str]:
    """docs/capacity-memory.png, docs/capacity-search.png and (with the store's CPU per search on a server measured)
    docs/capacity-nodes.png; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import numpy as np

    documents = np.logspace(5, np.log10(5e7), 40)
    figure, axes = plt.subplots(figsize=(6.4, 4))
    for tier in TIERS:
        axes.loglog(documents, [memory_bytes(measured, tier, n) * assumptions.memory_headroom / GIB for n in documents],
                    label=TIER_LABELS[tier])
    axes.axhline(assumptions.node_memory_gib, color="grey", linestyle=":", label=f"one node ({assumptions.node_memory_gib:g} GiB)")
    axes.set(xlabel="documents", ylabel="GiB in the store process", title="Mirror memory by tier (fitted, × headroom)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(directory / "capacity-memory.png", dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6.4, 4))
    for tier in TIERS:
        axes.loglog(documents, [1 / store_cpu_s(measured, tier, n) for n in documents], label=TIER_LABELS[tier])
    if store_cpu is not None:
        axes.axhline(1 / store_cpu.one, color="grey", linestyle=":", label="store on a Milvus server (measured)")
    axes.set(xlabel="documents", ylabel="searches/s per core", title="Store searches one core answers (top 10)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(directory / "capacity-search.png", dpi=110)
    plt.close(figure)
    if store_cpu is None:
        return ["capacity-memory.png", "capacity-search.png"]

    qps = np.linspace(50, 3000, 60)
    figure, axes = plt.subplots(figsize=(6.4, 4))
    axes.plot(qps, [plan_server(measured, store_cpu, q, assumptions).nodes for q in qps], label="dense or hybrid")
    axes.plot(qps, [plan_server(measured, store_cpu, q, assumptions, rerank=True).nodes for q in qps],
              label=f"with rerank of {assumptions.rerank_pairs}")
    axes.set(xlabel="searches/s", ylabel="nodes", title=f"Nodes of {assumptions.node_cpus} CPUs + {assumptions.node_gpus} GPU "
             "(Milvus server not counted)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(directory / "capacity-nodes.png", dpi=110)
    plt.close(figure)
    return ["capacity-memory.png", "capacity-search.png", "capacity-nodes.png"]


# --- the page -----------------------------------------------------------------------------------------------------

BEGIN, END = "<!-- generated by bench/capacity.py: begin -->", "<!-- generated by bench/capacity.py: end -->"


def generated(measured: dict, check: dict | None, replicas: dict | None, assumptions: Assumptions,
              images: list[str]) -> str:
    store_cpu = server_store_cpu_s(replicas)
    parts = [f"Measured {measured['measured']} on a {measured['cpu_count']}-core machine (load average "
             f"{measured['load_average_start'][0]:.1f} at the start, {measured['load_average_end'][0]:.1f} at the end); "
             "CPU seconds of the measuring process, one thread.",
             "### Stage costs\n\n" + stage_table(measured),
             "### Store searches one core answers (searches/s, from the fitted lines)\n\n" + search_rate_table(measured),
             "### Memory for N documents, per tier\n\n" + memory_table(measured, assumptions),
             "### Milvus's own memory for the vectors (its published rules of thumb, not measured here)\n\n"
             + milvus_memory_table(),
             "### A Milvus Lite store: one process, so one ceiling (hybrid searches/s: dense tier, BM25 and fusion "
             "each search)\n\n" + lite_table(measured)]
    if store_cpu is not None:
        parts.append(f"### Replicas and nodes for a target rate, on a Milvus server\n\nThe store's CPU per search on a "
                     f"Milvus server, measured: **{store_cpu.one * 1000:.2f} ms** with one store replica, so one store "
                     f"process answers at most **{1 / store_cpu.one:,.0f} searches/s** (the one-process ceiling). With "
                     f"two, each search cost {store_cpu.several * 1000:.2f} ms summed over the replicas and their "
                     "coordinator: rows needing more than one store replica are charged that. Store replicas run at "
                     f"{assumptions.utilisation:.0%} of a core.\n\n" + plan_table(measured, store_cpu, assumptions))
    if check and check.get("fill"):
        parts.append("### The model against mirrors of 1M vectors filled in one process\n\n"
                     + fill_table(measured, check["fill"]))
    if check and any(tier in check for tier in ("float32", "binary", "int8")):
        parts.append("### The model against a store restarted over Milvus Lite\n\n" + check_table(measured, check))
        parts.append("### Restarts of a Lite store as its collection grew\n\n" + restart_table(check))
    parts.append("### Assumptions (change them in bench/capacity_model.py)\n\n" + assumptions_table(assumptions))
    parts += [f"![{image}]({image})" for image in images]
    return "\n\n".join(parts)


def server_store_cpu_s(replicas: dict | None) -> StoreCpu | None:
    """The store's CPU seconds per dense search on a Milvus server, from bench/store_replicas.py's run."""
    if not replicas:
        return None
    one = replicas["runs"]["1"]["store_cpu_s_per_search"]
    return StoreCpu(one, replicas["runs"].get("2", {}).get("store_cpu_s_per_search", one))


def write_report(directory: Path, measured: dict, check: dict | None, replicas: dict | None,
                 assumptions: Assumptions = Assumptions()) -> None:
    """Replace docs/capacity.md's generated part (between the markers) and draw its plots."""
    store_cpu = server_store_cpu_s(replicas)
    images = plots(directory, measured, store_cpu, assumptions)
    page = directory / "capacity.md"
    text = page.read_text() if page.exists() else f"# Capacity\n\n{BEGIN}\n{END}\n"
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    page.write_text(text[:start] + "\n" + generated(measured, check, replicas, assumptions, images) + "\n" + text[end:])
