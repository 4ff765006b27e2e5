"""Retrieval quality and latency of collections served over HTTP, on the Debian set.

    python bench/retrieval.py [--corpus 10k] [--latency-queries 300] [--model DIR] [--reranker DIR]

In one run:
1. starts ``rayprism serve`` with a ``debian`` collection in a fresh Milvus Lite file;
2. ingests the corpus through the documents endpoint (the path ``rayprism ingest`` takes);
3. scores the dev queries in every mode and fusion: MRR@10, Recall@1, Recall@10, and with
   the ``section == <target's section>`` filter the share of targets still reachable;
4. times hybrid search (default fusion) one query at a time through HTTP, query embedding
   included, without and with the ``section`` filter (filters run on the mirror's columns);
5. stops the service and, as the baseline, runs the plain script the reference figures came
   from on the same Milvus file: sentence-transformers encodes the query, pymilvus runs
   ``hybrid_search`` in process. It also encodes 1,000 documents in process for an ingest baseline;
6. times one search alone, in process: the store's in-memory mirror against Milvus Lite's own
   search, and (dense) against a Milvus server (PyPI's embedded ``milvus``, the one the tests
   start) holding the same rows, searched through the store's server path.

``--model`` serves another model (e.g. one ``rayprism train`` wrote) under the same name, and
the plain script then encodes with it too.

``--reranker`` serves a cross-encoder (``kind: reranker``, e.g. one ``rayprism train`` wrote with
``objective: cross_encoder``) beside it; the dev queries are then also scored by hybrid search (default
fusion) with a ``rerank`` stage over the best ``--rerank-candidates`` hits (20 and 50 by default) at each
``--rerank-weights`` (1: the reranker's order; 0.5: its score fused with hybrid's, equally), and step 4
times those searches too, interleaved with hybrid alone: their p50/p99 and what the stage adds.

Needs ../shared/data/debian/ and, for the server column, the ``milvus`` package (the dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from debian import DATA, FIELDS, REPO, percentile_ms, read_jsonl, scores

sys.path.insert(0, str(REPO))
from tests.milvus_server import milvus_server  # noqa: E402  (the test suite's embedded Milvus server)

REFERENCE = {  # ../shared/data/debian/README.md: plain script, all-MiniLM-L6-v2 + Milvus Lite
    "dense": (0.764, 0.683, 0.916),
    "sparse": (0.792, 0.732, 0.896),
    "hybrid rrf k=60": (0.809, 0.740, 0.933),
}
CONFIGS = [
    ("dense", {"mode": "dense"}),
    ("sparse", {"mode": "sparse"}),
    ("hybrid rrf k=60", {"mode": "hybrid", "fusion": {"type": "rrf", "k": 60}}),
    ("hybrid weighted 0.5/0.5 (the default)", {"mode": "hybrid"}),
    ("hybrid weighted 0.3/0.7", {"mode": "hybrid", "fusion": {"type": "weighted", "weights": {"dense": 0.3, "sparse": 0.7}}}),
]


RERANKER = "reranker"
"""The served name of ``--reranker``."""


def reranked_name(candidates: int, weight: float = 1.0) -> str:
    return f"hybrid (default fusion) + rerank {candidates}" + (f", weight {weight:g}" if weight != 1 else "")


def reranked_options(candidates: int, weight: float = 1.0) -> dict:
    """Hybrid search whose best ``candidates`` hits after fusion the reranker rescores (its score fused
    with the first one by ``weight``)."""
    return {"mode": "hybrid", "rerank": {"model": RERANKER, "candidates": candidates, "weight": weight}}


def start_service(config_path: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rayprism.cli", "serve", str(config_path), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    for line in process.stdout:
        if "rayprism is serving at" in line:
            return process
        if line.startswith("error:"):
            raise SystemExit(line)
    raise SystemExit("the service exited before it was ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=["10k", "53k"], default="10k")
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default=None, help="model source to serve (default: all-MiniLM-L6-v2)")
    parser.add_argument("--reranker", default=None,
                        help="a cross-encoder directory: also score and time hybrid + a rerank stage")
    parser.add_argument("--rerank-candidates", default="20,50",
                        help="comma-separated: hits the rerank stage rescores, one row each (default 20,50)")
    parser.add_argument("--rerank-weights", default="1,0.5",
                        help="comma-separated: the rerank stage's weight (1: the reranker's order alone; 0.5: its "
                             "score and the fused one, equally), one row each with every --rerank-candidates "
                             "(default 1,0.5); latency is timed at the first")
    args = parser.parse_args()
    rerank_candidates = [int(value) for value in args.rerank_candidates.split(",")] if args.reranker else []
    rerank_weights = [float(value) for value in args.rerank_weights.split(",")]
    if not DATA.exists():
        raise SystemExit(f"needs the Debian retrieval set in {DATA}")

    corpus = read_jsonl(DATA / f"corpus-{args.corpus}.jsonl")
    queries = read_jsonl(DATA / f"queries-dev-{args.corpus}.jsonl")
    targets = [str(q["doc_id"]) for q in queries]
    work = Path(tempfile.mkdtemp(prefix="rayprism-retrieval-"))
    store = work / "bench.db"
    from rayprism.platform.config import DEFAULT_MODEL_SOURCE

    model_source = args.model or DEFAULT_MODEL_SOURCE
    config = {
        "models": [{"name": "minilm", "source": model_source, "torch_threads": os.cpu_count()}],
        "store": {"uri": str(store)},
        "collections": [{"name": "debian", "fields": FIELDS}],
    }
    if args.reranker:
        config["models"].append({"name": RERANKER, "kind": "reranker", "source": args.reranker,
                                 "torch_threads": os.cpu_count()})
    configs = CONFIGS + [(reranked_name(n, w), reranked_options(n, w)) for n in rerank_candidates for w in rerank_weights]
    config_path = work / "serve.yaml"
    config_path.write_text(json.dumps(config))

    from rayprism.client import Client, SourceDocument

    url = f"http://127.0.0.1:{args.port}"
    service = start_service(config_path, args.port)
    results: dict[str, tuple[float, float, float]] = {}
    try:
        with Client(url) as client:
            documents = [SourceDocument(str(d["id"]), {k: d[k] for k in ("id", "text", *FIELDS)}) for d in corpus]
            ingest = client.ingest("debian", documents, batch_size=args.batch_size)
            print(f"ingested {ingest.upserted} docs through HTTP: {ingest.docs_per_s:.1f} docs/s", flush=True)
            time.sleep(3)  # the store seals fresh rows a second after the last write
            for name, options in configs:
                ranked = [[h["id"] for h in client.search("debian", q["query"], k=10, **options)["results"]]
                          for q in queries]
                results[name] = scores(ranked, targets)
                print(f"{name}: MRR@10 {results[name][0]:.3f} R@1 {results[name][1]:.3f} R@10 {results[name][2]:.3f}",
                      flush=True)
            filtered = [[h["id"] for h in client.search("debian", q["query"], k=10, mode="hybrid",
                                                         filter=f'section == "{q["section"]}"')["results"]]
                        for q in queries]
            reachable = scores(filtered, targets)
            print(f"hybrid + section filter: MRR@10 {reachable[0]:.3f} R@10 {reachable[2]:.3f}", flush=True)

        latencies, filtered_latencies = [], []
        reranked_latencies: dict[int, list[float]] = {n: [] for n in rerank_candidates}
        with httpx.Client(base_url=url, timeout=60) as http:
            for q in queries[: args.latency_queries]:  # interleaved, so all see the same machine
                timed = [({}, latencies), ({"filter": f'section == "{q["section"]}"'}, filtered_latencies),
                         *((reranked_options(n, rerank_weights[0]), reranked_latencies[n]) for n in rerank_candidates)]
                for extra, timings in timed:
                    started = time.perf_counter()
                    response = http.post("/v1/collections/debian/search", json={"query": q["query"], "k": 10, **extra})
                    timings.append(time.perf_counter() - started)
                    response.raise_for_status()
    finally:
        service.send_signal(signal.SIGINT)
        service.communicate(timeout=180)

    try:
        baseline_latencies, baseline_ingest, components = plain_script_baseline(store, corpus, queries[: args.latency_queries],
                                                                                model_source)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\ncorpus-{args.corpus}, {len(queries)} dev queries\n")
    print("| retriever | MRR@10 | R@1 | R@10 | reference MRR@10 (plain script) |")
    print("|---|---|---|---|---|")
    for name, (mrr, r1, r10) in results.items():
        reference = REFERENCE.get(name, (None,))[0]
        shown = f"{reference:.3f}" if reference and args.corpus == "10k" else "—"
        print(f"| {name} | {mrr:.3f} | {r1:.3f} | {r10:.3f} | {shown} |")
    print(f"| hybrid (default fusion), filter section == target's | {reachable[0]:.3f} | {reachable[1]:.3f} | {reachable[2]:.3f} | — |")
    print("\n| measure | rayprism (HTTP) | plain script (in process, same run) | ratio |")
    print("|---|---|---|---|")
    ours_p50, base_p50 = percentile_ms(latencies, 50), percentile_ms(baseline_latencies, 50)
    print(f"| hybrid search p50, ms (query embedding included) | {ours_p50:.1f} | {base_p50:.1f} | {ours_p50 / base_p50:.2f} |")
    filtered_p50 = percentile_ms(filtered_latencies, 50)
    print(f"| hybrid search with the section filter p50, ms (baseline: rayprism unfiltered) | {filtered_p50:.1f} | "
          f"{ours_p50:.1f} | {filtered_p50 / ours_p50:.2f} |")
    print(f"| hybrid search p99, ms | {percentile_ms(latencies, 99):.1f} | {percentile_ms(baseline_latencies, 99):.1f} | "
          f"{percentile_ms(latencies, 99) / percentile_ms(baseline_latencies, 99):.2f} |")
    print(f"| ingest, docs/s (plain: encode only) | {ingest.docs_per_s:.1f} | {baseline_ingest:.1f} | "
          f"{ingest.docs_per_s / baseline_ingest:.2f} |")
    if rerank_candidates:
        print(f"\n| search through HTTP, {len(latencies)} queries interleaved | p50 ms | p99 ms | added p50 ms "
              f"| added p99 ms | MRR@10 (weight {' / '.join(f'{w:g}' for w in rerank_weights)}) |")
        print("|---|---|---|---|---|---|")
        hybrid_p99 = percentile_ms(latencies, 99)
        print(f"| hybrid (default fusion) | {ours_p50:.1f} | {hybrid_p99:.1f} | — | — | "
              f"{results['hybrid weighted 0.5/0.5 (the default)'][0]:.3f} |")
        for n, timings in reranked_latencies.items():
            p50, p99 = percentile_ms(timings, 50), percentile_ms(timings, 99)
            print(f"| {reranked_name(n)} | {p50:.1f} | {p99:.1f} | {p50 - ours_p50:+.1f} | {p99 - hybrid_p99:+.1f} | "
                  f"{' / '.join(f'{results[reranked_name(n, w)][0]:.3f}' for w in rerank_weights)} |")
    print("\n| one search in process, p50 ms | rayprism's in-memory mirror | Milvus Lite | ratio "
          "| Milvus server (store's server path) | mirror ÷ server |")
    print("|---|---|---|---|---|---|")
    for name, ours, lite, server in components:
        shown = f"{server:.2f} | {ours / server:.3f}" if server else "— (no BM25 before Milvus 2.5) | —"
        print(f"| {name} | {ours:.2f} | {lite:.2f} | {ours / lite:.3f} | {shown} |")


def plain_script_baseline(store: Path, corpus: list[dict], queries: list[dict], model_source: str):
    """What the reference figures measured: ST encodes, pymilvus searches the same file in process."""
    import torch
    from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.models.source import resolve_source

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(resolve_source(model_source), device="cpu")
    started = time.perf_counter()
    model.encode([d["text"] for d in corpus[:1000]], batch_size=32)
    ingest_docs_per_s = 1000 / (time.perf_counter() - started)

    client = MilvusClient(str(store))
    client.load_collection("debian")
    latencies = []
    for q in queries:
        started = time.perf_counter()
        vector = model.encode([q["query"]])[0]
        dense = AnnSearchRequest(data=[vector], anns_field="dense", param={"metric_type": "COSINE"}, limit=50)
        sparse = AnnSearchRequest(data=[q["query"]], anns_field="sparse", param={"metric_type": "BM25"}, limit=50)
        client.hybrid_search("debian", [dense, sparse], RRFRanker(60), limit=10,
                             output_fields=["text", *FIELDS])
        latencies.append(time.perf_counter() - started)
    print(f"plain script: hybrid p50 {statistics.median(latencies) * 1e3:.1f} ms; encode {ingest_docs_per_s:.1f} docs/s")
    vectors = model.encode([q["query"] for q in queries])
    components = search_components(client, queries, vectors)
    client.close()
    return latencies, ingest_docs_per_s, components


def search_components(client, queries: list[dict], vectors) -> list[tuple[str, float, float, float | None]]:
    """One search alone, in process: Milvus Lite's own against the store's in-memory mirror
    (built here from the same file, as the store builds it), and dense against a Milvus server
    holding the same rows, p50 ms (None where the server cannot search)."""
    from rayprism.platform.store.layout import read_layout
    from rayprism.platform.store.mirror import DENSE, SPARSE, build_mirror

    layout = read_layout(client, "debian", client.describe_collection("debian"))
    mirror = build_mirror(client, "debian", layout, fetch_vectors=dict.fromkeys)  # float tier: nothing to fetch
    with tempfile.TemporaryDirectory(prefix="rayprism-milvus-") as server_dir, milvus_server(Path(server_dir)) as uri:
        server = copied_to_server(client, uri, layout.dimensions)
        try:
            server_dense = [server.hits("debian", DENSE, vector, 50, metric="COSINE") for vector in vectors]
            lite_dense = [client.search("debian", data=[vector], anns_field="dense", limit=50,
                                        search_params={"metric_type": "COSINE"})[0] for vector in vectors]
            same = np.mean([len({doc for doc, _ in ours} & {hit["id"] for hit in theirs}) / 50
                            for ours, theirs in zip(server_dense, lite_dense)])
            print(f"dense top-50 on the server: {same:.3f} of Milvus Lite's hits", flush=True)
            server_ms = p50_ms(queries, vectors, lambda _, vector: server.hits("debian", DENSE, vector, 50,
                                                                              metric="COSINE"))
        finally:
            server.close()

    return [
        ("BM25, 50 hits", p50_ms(queries, vectors, lambda text, _: mirror.routes[SPARSE].top_k(text, 50)),
         p50_ms(queries, vectors, lambda text, _: client.search("debian", data=[text], anns_field="sparse", limit=50,
                                                                search_params={"metric_type": "BM25"})), None),
        ("dense (exact cosine), 50 hits", p50_ms(queries, vectors, lambda _, vector: mirror.routes[DENSE].top_k(vector, 50)),
         p50_ms(queries, vectors, lambda _, vector: client.search("debian", data=[vector], anns_field="dense", limit=50,
                                                                  search_params={"metric_type": "COSINE"})), server_ms),
    ]


def p50_ms(queries: list[dict], vectors, search) -> float:
    timings = []
    for query, vector in zip(queries, vectors):
        started = time.perf_counter()
        search(query["query"], vector)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e3


def copied_to_server(client, uri: str, dimensions: int):
    """The Lite collection's rows written to the server through the store (dense and BM25-less: the
    embedded server is Milvus 2.3), flushed; the store stays open for searching."""
    from rayprism.platform.config import CollectionConfig
    from rayprism.platform.store.milvus import MilvusStore

    store = MilvusStore(uri)
    store.ensure(CollectionConfig(name="debian", fields=FIELDS, bm25=False), dimensions)
    rows = client.query_iterator("debian", batch_size=1000, output_fields=["text", "dense", *FIELDS])
    started = time.perf_counter()
    while batch := rows.next():
        store.upsert("debian", batch)
    rows.close()
    store.flush("debian")
    print(f"copied {store.count('debian')} rows to the Milvus server in {time.perf_counter() - started:.1f} s",
          flush=True)
    return store


if __name__ == "__main__":
    main()
