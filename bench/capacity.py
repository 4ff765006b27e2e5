"""The capacity model's measurements: CPU per request of each stage and memory per document of each tier, in one run.

    python bench/capacity.py                      # measure (a few minutes), write bench/capacity.json, regenerate docs
    python bench/capacity.py --report             # regenerate docs/capacity.md and its plots from the JSON files only

Measured here, on this machine, in one run (CPU seconds of the process, not wall time: the machine is shared):

- **query and document embedding**: all-MiniLM-L6-v2 (``package:`` source) through rayprism's torch encoder, one
  torch thread; Debian dev queries one at a time (a search embeds one query), Debian package descriptions 32 at a
  time (a batch), both as CPU seconds per token;
- **store search** on the in-memory mirror, per tier (float32, int8 codes, binary codes + float rescoring, a
  multi-vector collection's MUVERA encodings + MaxSim rerank) and BM25 over real Debian descriptions, each at three
  sizes in a fresh process with one numba thread, fitted as ``fixed + per_row × N``; a compressed tier's rescoring
  fetch from a Milvus Lite collection is measured apart (its cost is Lite's, not the scan's);
- **fusion** of two candidate lists (weighted, the default), and a **rerank pair** through rayprism's cross-encoder
  scorer on a model of ms-marco-MiniLM-L-6-v2's shape (6 layers, 384 wide, random weights: the cost, not the scores);
- **memory per document** of each tier: the RSS growth of a fresh process while it fills a mirror (what a store
  builds on start), at three sizes, fitted linearly (the intercept is what the first rows cost: arrays, imports).

``--report`` merges ``bench/capacity-check.json`` (``bench/capacity_check.py``: the 1M-vector run) and
``bench/store-replicas.json`` (``bench/store_replicas.py``: the store's CPU per search on a Milvus server) when they
exist, and writes docs/capacity.md's generated tables and docs/capacity-*.png (bench/capacity_model.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEBIAN = REPO.parent / "shared" / "data" / "debian"
DIMENSIONS = 384
TIER_SIZES = {"float32": (50_000, 100_000, 200_000), "int8": (50_000, 100_000, 200_000),
              "binary": (50_000, 100_000, 200_000), "fde": (5_000, 10_000, 20_000), "bm25": (10_000, 25_000, 50_000)}
FDE_TOKENS_PER_DOCUMENT = 64
"""Token vectors per document in the MUVERA tier's measurement (MiniLM caps a piece at 256 tokens; a Debian
description averages about this many)."""
FDE_DIMENSIONS = 2560
"""A multi-vector collection's default encoding width (k_sim 3, d_proj 16, r_reps 20: docs/api.md)."""
SEARCHES = 100
CANDIDATES = 100
"""Hits per route fused in a hybrid search (the default ``candidates``)."""


def texts(path: Path, key: str, rows: int) -> list[str]:
    out = []
    with path.open() as lines:
        for line in lines:
            out.append(json.loads(line)[key])
            if len(out) == rows:
                break
    return out


def unit(rng: np.random.Generator, rows: int, dimensions: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, dimensions), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- one tier at one size, in a fresh process -------------------------------------------------------------------


def mirror_of(tier: str):
    from rayprism.platform.config import CollectionConfig
    from rayprism.platform.store.layout import Layout
    from rayprism.platform.store.mirror import Mirror

    config = {"float32": {}, "int8": {"compression": {"type": "int8"}}, "binary": {"compression": {"type": "binary"}},
              "fde": {"multivector": {}}, "bm25": {}}[tier]
    dimensions = FDE_DIMENSIONS if tier == "fde" else DIMENSIONS
    layout = Layout.from_config(CollectionConfig(name="c", bm25=tier == "bm25", **config), dimensions)
    vectors: dict = {}
    bm25 = None
    if tier == "bm25":
        from milvus_lite.analyzer import compute_tf, create_analyzer

        analyzer = create_analyzer(None)  # Milvus's standard analyzer, what a collection without analyzer_params gets
        bm25 = {"analyze": lambda value: compute_tf(analyzer.analyze(value))}
    mirror = Mirror(layout, bm25, lambda ids: {doc: vectors[doc] for doc in ids if doc in vectors})
    if tier == "bm25":
        del mirror.routes["dense"]  # BM25's postings alone (its dense route is the float32 tier's)
    return mirror, vectors


def fill(mirror, tier: str, rng: np.random.Generator, corpus: list[str] | None, start: int, count: int) -> None:
    from rayprism.platform.store.tokens import TOKENS_KEY

    ids = [f"r{start + i}" for i in range(count)]
    if tier == "bm25":
        records = [{"id": doc, "text": text} for doc, text in zip(ids, corpus[start : start + count])]
    else:
        dense = unit(rng, count, FDE_DIMENSIONS if tier == "fde" else DIMENSIONS)
        records = [{"id": doc, "dense": vector} for doc, vector in zip(ids, dense)]
        if tier == "fde":
            for record in records:
                record[TOKENS_KEY] = unit(rng, FDE_TOKENS_PER_DOCUMENT, DIMENSIONS)
    mirror.upsert(records)
    if start == 0:  # the search kernels compiled too
        mirror.hits("sparse" if tier == "bm25" else "dense", "package" if tier == "bm25" else records[0]["dense"], 1)


def tier_point(tier: str, rows: int) -> dict:
    """RSS growth while a mirror of ``tier`` fills with ``rows`` rows (4,096 at a time, as a build reads them), then
    the process's CPU seconds per search (``SEARCHES`` top-10 searches; NUMBA_NUM_THREADS=1 is the caller's)."""
    import psutil

    process = psutil.Process()
    rng = np.random.default_rng(0)
    corpus = texts(DEBIAN / "corpus-53k.jsonl", "text", rows) if tier == "bm25" else None
    warm, _ = mirror_of(tier)  # numba compiles the tier's kernels (hundreds of MB once): not the rows' memory
    fill(warm, tier, rng, corpus, 0, 64)
    mirror, vectors = mirror_of(tier)
    before = process.memory_info().rss
    for start in range(0, rows, 4096):
        fill(mirror, tier, rng, corpus, start, min(4096, rows - start))
    grown_bytes = process.memory_info().rss - before
    if tier in ("int8", "binary"):  # the rescoring fetch, in memory here (Milvus's fetch is measured apart)
        vectors.update((f"r{i}", v) for i, v in enumerate(unit(np.random.default_rng(0), rows, DIMENSIONS)))
    queries = texts(DEBIAN / "queries-dev-53k.jsonl", "query", SEARCHES + 5) if tier == "bm25" else \
        unit(rng, SEARCHES + 5, FDE_DIMENSIONS if tier == "fde" else DIMENSIONS)
    query_tokens = unit(rng, 8, DIMENSIONS)
    route = "sparse" if tier == "bm25" else "dense"

    def search(query) -> None:
        hits = mirror.hits(route, query, 10 if tier != "fde" else 200)
        if tier == "fde":
            hits = mirror.rerank(query_tokens, [doc for doc, _ in hits], 10)
        assert hits

    for query in queries[:5]:
        search(query)
    started = time.process_time()
    for query in queries[5:]:
        search(query)
    return {"rows": rows, "rss_bytes": grown_bytes, "search_cpu_s": (time.process_time() - started) / SEARCHES}


def tier_points(tier: str) -> list[dict]:
    points = []
    for rows in TIER_SIZES[tier]:
        command = [sys.executable, __file__, "--point", tier, str(rows)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tier} at {rows} rows failed:\n{done.stderr[-3000:]}")
        points.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {tier} {points[-1]}", flush=True)
    return points


def fitted(points: list[dict], key: str) -> dict:
    """``key`` against rows as ``fixed + per_row × rows`` (least squares), with the points it came from."""
    rows = np.array([point["rows"] for point in points], dtype=np.float64)
    values = np.array([point[key] for point in points], dtype=np.float64)
    per_row, fixed = np.polyfit(rows, values, 1)
    return {"fixed": float(fixed), "per_row": float(per_row), "points": [[int(r), float(v)] for r, v in zip(rows, values)]}


# --- stages measured in this process ----------------------------------------------------------------------------


def cpu_per_call(call, repeats: int) -> float:
    call()
    started = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - started) / repeats


def embedding_costs() -> dict:
    import torch

    from rayprism.platform.config.models import ModelConfig
    from rayprism.platform.models.registry import load_encoder

    encoder = load_encoder(ModelConfig(torch_threads=1), num_cpus=1)
    torch.set_num_threads(1)
    queries = texts(DEBIAN / "queries-dev-53k.jsonl", "query", 200)
    documents = texts(DEBIAN / "corpus-53k.jsonl", "text", 512)
    prepared = encoder.prepare(queries[:10])
    encoder.encode(prepared)
    started, tokens = time.process_time(), 0
    for query in queries:
        items = encoder.prepare([query])
        tokens += sum(item.n_tokens for item in items)
        encoder.encode(items)
    query_cpu = time.process_time() - started
    started, document_tokens = time.process_time(), 0
    for start in range(0, len(documents), 32):
        items = encoder.prepare(documents[start : start + 32])
        document_tokens += sum(item.n_tokens for item in items)
        encoder.encode(items)
    document_cpu = time.process_time() - started
    return {"model": "all-MiniLM-L6-v2 (torch, 1 thread)",
            "query": {"cpu_s_per_query": query_cpu / len(queries), "tokens_per_query": tokens / len(queries),
                      "cpu_s_per_token": query_cpu / tokens, "queries": len(queries)},
            "document": {"cpu_s_per_token": document_cpu / document_tokens,
                         "tokens_per_document": document_tokens / len(documents), "documents": len(documents),
                         "batch": 32}}


def rerank_costs(work: Path) -> dict:
    """CPU per (query, document) pair through rayprism's cross-encoder scorer, on a model of ms-marco-MiniLM-L-6-v2's
    shape made from a transformers config (random weights; only the cost is read)."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rayprism.platform.config import DEFAULT_MODEL_SOURCE
    from rayprism.platform.models.cross_encoder import CrossEncoderScorer
    from rayprism.platform.models.source import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(DEFAULT_MODEL_SOURCE))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(work / "hf")
    tokenizer.save_pretrained(work / "hf")
    CrossEncoder(str(work / "hf"), max_length=512).save(str(work / "st"))
    scorer = CrossEncoderScorer(str(work / "st"), torch_threads=1)
    torch.set_num_threads(1)
    queries = texts(DEBIAN / "queries-dev-53k.jsonl", "query", 4)
    documents = texts(DEBIAN / "corpus-53k.jsonl", "text", 32)
    scorer.score(scorer.prepare_pairs(queries[0], documents[:4]))
    started, pairs, tokens = time.process_time(), 0, 0
    for query in queries:
        items = scorer.prepare_pairs(query, documents)
        tokens += sum(item.n_tokens for item in items)
        scorer.score(items)
        pairs += len(items)
    cpu = time.process_time() - started
    return {"model": "a cross-encoder of ms-marco-MiniLM-L-6-v2's shape (random weights), 1 torch thread",
            "cpu_s_per_pair": cpu / pairs, "tokens_per_pair": tokens / pairs, "pairs": pairs}


def fusion_costs() -> dict:
    from rayprism.platform.store.fusion import fuse

    rng = np.random.default_rng(0)
    dense = [(f"d{i}", float(s)) for i, s in enumerate(np.sort(rng.random(CANDIDATES))[::-1])]
    sparse = [(f"d{i * 3}", float(s)) for i, s in enumerate(np.sort(rng.random(CANDIDATES) * 20)[::-1])]
    return {"cpu_s_per_call": cpu_per_call(lambda: fuse(dense, sparse), 2000), "candidates": CANDIDATES}


def rescore_fetch_costs(work: Path) -> dict:
    """A compressed tier's rescoring reads its 40 candidates' float vectors (k 10 × rescore_multiplier 4) from Milvus:
    on Milvus Lite (in this process) its CPU per fetch at two collection sizes, fitted like the scans."""
    points = []
    for rows in (10_000, 40_000):
        command = [sys.executable, __file__, "--fetch-point", str(work / f"fetch-{rows}.db"), str(rows)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the fetch at {rows} rows failed:\n{done.stderr[-3000:]}")
        points.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  fetch {points[-1]}", flush=True)
    return fitted(points, "fetch_cpu_s")


def fetch_point(path: Path, rows: int) -> dict:
    from rayprism.platform.config import CollectionConfig
    from rayprism.platform.store.milvus import MilvusStore

    store = MilvusStore(str(path))
    store.ensure(CollectionConfig(name="f", bm25=False), DIMENSIONS)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 5000):
        count = min(5000, rows - start)
        store.upsert("f", [{"id": f"r{start + i}", "dense": v, "text": ""} for i, v in enumerate(unit(rng, count, DIMENSIONS))])
    store.flush("f")
    fetch = store._vectors("f")
    picks = [[f"r{j}" for j in rng.choice(rows, 40, replace=False)] for _ in range(55)]
    for ids in picks[:5]:
        assert len(fetch(ids)) == 40
    started = time.process_time()
    for ids in picks[5:]:
        fetch(ids)
    return {"rows": rows, "fetch_cpu_s": (time.process_time() - started) / 50}


def measure(out: Path) -> None:
    results: dict = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpu_count": os.cpu_count(),
                     "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        print("embedding", flush=True)
        results["embedding"] = embedding_costs()
        print("rerank", flush=True)
        results["rerank"] = rerank_costs(work / "reranker")
        results["fusion"] = fusion_costs()
        print("rescore fetch (Milvus Lite)", flush=True)
        results["rescore_fetch_lite"] = rescore_fetch_costs(work)
    results["tiers"] = {}
    for tier in TIER_SIZES:
        print(f"tier {tier}", flush=True)
        points = tier_points(tier)
        results["tiers"][tier] = {"memory_bytes": fitted(points, "rss_bytes"), "search_cpu_s": fitted(points, "search_cpu_s")}
    results["tiers"]["fde"]["tokens_per_document"] = FDE_TOKENS_PER_DOCUMENT
    results["tiers"]["fde"]["dimensions"] = FDE_DIMENSIONS
    results["load_average_end"] = os.getloadavg()
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "capacity.json")
    parser.add_argument("--check", type=Path, default=REPO / "bench" / "capacity-check.json")
    parser.add_argument("--replicas", type=Path, default=REPO / "bench" / "store-replicas.json")
    parser.add_argument("--report", action="store_true", help="only regenerate docs/capacity.md from the JSON files")
    parser.add_argument("--point", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--fetch-point", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(tier_point(args.point[0], int(args.point[1]))))
        return
    if args.fetch_point:
        print(json.dumps(fetch_point(Path(args.fetch_point[0]), int(args.fetch_point[1]))))
        return
    if not args.report:
        measure(args.out)
    from bench.capacity_model import write_report

    write_report(REPO / "docs", json.loads(args.out.read_text()),
                 json.loads(args.check.read_text()) if args.check.exists() else None,
                 json.loads(args.replicas.read_text()) if args.replicas.exists() else None)
    print("wrote docs/capacity.md and docs/capacity-*.png")


if __name__ == "__main__":
    main()
