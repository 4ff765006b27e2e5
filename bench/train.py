"""Training and conversion speed, measured in one run.

    python bench/train.py [--pairs 1536] [--batch-size 64] [--skip-onnx] [--skip-train]

1. Training throughput on the same Debian pairs (synopsis → description cut to 128 tokens,
   in-batch negatives, batches of 64 queries), in samples (queries) per second over the steps after
   the first few:
   * baseline: a plain single-process loop in this process (sentence-transformers model, the
     tokenizer pads each batch, cross-entropy over cosine logits, AdamW), torch on both cores;
   * ``rayprism train`` (Ray Train) with 1 worker × 2 CPUs and with 2 workers × 1 CPU, on a local
     Ray started here (its step rate from the progress lines, and the wall time of ``fit``).
2. Encoding speed of all-MiniLM-L6-v2 exported by ``rayprism convert onnx``: the ``onnx`` backend
   (fp32 and int8) against the ``torch`` backend (the same length-sorted batches of 32) and
   ``SentenceTransformer.encode``, on 2,048 short sentences (the dev queries, repeated) and 512
   Debian documents; runs interleaved, best of 3; quality as cosine to the torch vectors.

Needs ../shared/data/debian/. The machine is shared: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "debian"
WARMUP_STEPS = 3


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with path.open() as lines:
        for line in lines:
            rows.append(json.loads(line))
            if limit is not None and len(rows) == limit:
                break
    return rows


def training_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    corpus = {row["id"]: row["text"] for row in read_jsonl(DATA / "corpus-53k.jsonl")}
    pairs = read_jsonl(DATA / "train-pairs-53k.jsonl")
    order = np.random.default_rng(seed).permutation(len(pairs))[:count]
    return [(pairs[i]["query"], corpus[pairs[i]["doc_id"]]) for i in order]


def plain_loop(pairs: list[tuple[str, str]], batch_size: int, threads: int) -> dict:
    """The baseline: what a single script with sentence-transformers and torch does."""
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import DEFAULT_MODEL_SOURCE
    from rayprism.platform.models.source import resolve_source

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SentenceTransformer(resolve_source(DEFAULT_MODEL_SOURCE), device="cpu")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    tokenizer = model.tokenizer
    timings = []
    for start in range(0, len(pairs) - batch_size + 1, batch_size):
        batch = pairs[start: start + batch_size]
        began = time.perf_counter()
        queries = tokenizer([q for q, _ in batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
        documents = tokenizer([d for _, d in batch], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
        q = F.normalize(model(dict(queries))["sentence_embedding"], dim=-1)
        d = F.normalize(model(dict(documents))["sentence_embedding"], dim=-1)
        loss = F.cross_entropy(q @ d.T / 0.05, torch.arange(len(batch)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timings.append(time.perf_counter() - began)
    steady = timings[WARMUP_STEPS:] or timings
    return {"samples_per_s": batch_size / statistics.mean(steady), "steps": len(timings),
            "seconds": sum(timings)}


def ray_train(pairs_file: Path, corpus_file: Path, workers: int, batch_size: int, work: Path) -> dict:
    """``rayprism train`` on the Ray this process started; samples/s from its progress lines."""
    from rayprism.platform.config import load_train_config
    from rayprism.trainers.run import execute

    name = f"bench-{workers}w"
    document = {
        "name": name,
        "model": {"max_document_tokens": 128},
        "data": {"pairs": {"path": str(pairs_file)}, "corpus": {"path": str(corpus_file)}},
        "training": {"batch_size": batch_size, "learning_rate": 5e-5, "log_every_steps": 1},
        "compute": {"num_workers": workers, "cpus_per_worker": 2 / workers},
        "checkpoints": {"every_steps": 100_000, "storage_path": str(work / "runs")},
        "output": str(work / name),
    }
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(document))
    lines: list[str] = []
    summary = execute(load_train_config(path), echo=lines.append)
    rates = [float(match.group(1)) for line in lines if (match := re.search(r"([\d.]+) samples/s", line))]
    steady = rates[WARMUP_STEPS:] or rates
    return {"samples_per_s": statistics.mean(steady), "steps": summary.steps, "seconds": summary.timings["fit_s"]}


def training_benchmark(args) -> list[tuple[str, dict]]:
    from rayprism.platform.ray_runtime import start_ray

    pairs = training_pairs(args.pairs)
    work = Path(tempfile.mkdtemp(prefix="rayprism-bench-train-"))
    pairs_file, corpus_file = work / "pairs.jsonl", work / "corpus.jsonl"
    with pairs_file.open("w") as out_pairs, corpus_file.open("w") as out_corpus:
        for index, (query, document) in enumerate(pairs):
            out_pairs.write(json.dumps({"query": query, "doc_id": index}) + "\n")
            out_corpus.write(json.dumps({"id": index, "text": document}) + "\n")
    results = [("plain loop, 1 process, 2 threads", plain_loop(pairs, args.batch_size, 2))]
    print(f"plain loop: {results[-1][1]['samples_per_s']:.1f} samples/s", flush=True)
    start_ray()
    for workers in (1, 2):
        results.append((f"rayprism train, {workers} worker(s) × {2 // workers} CPU",
                        ray_train(pairs_file, corpus_file, workers, args.batch_size, work)))
        print(f"{results[-1][0]}: {results[-1][1]['samples_per_s']:.1f} samples/s", flush=True)
    return results


def encode_benchmark(args) -> list[tuple[str, str, float, float, float]]:
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import DEFAULT_MODEL_SOURCE, BatchingConfig, ModelConfig
    from rayprism.platform.models.registry import load_encoder
    from rayprism.trainers.convert.onnx import export_onnx

    work = Path(tempfile.mkdtemp(prefix="rayprism-bench-onnx-"))
    export_onnx(DEFAULT_MODEL_SOURCE, work / "minilm")
    source = str(work / "minilm")
    batching = BatchingConfig(forward_batch_size=32)
    encoders = {
        "torch backend fp32": load_encoder(ModelConfig(source=source, torch_threads=2, batching=batching)),
        "onnx backend fp32": load_encoder(ModelConfig(source=source, backend="onnx", torch_threads=2,
                                                      batching=batching)),
        "onnx backend int8": load_encoder(ModelConfig(source=source, backend="onnx", torch_threads=2,
                                                      batching=batching, options={"file": "onnx/model_int8.onnx"})),
    }
    bare = SentenceTransformer(source, device="cpu")
    queries = [row["query"] for row in read_jsonl(DATA / "queries-dev-10k.jsonl")]
    sentences = (queries * 3)[:2048]
    documents = [row["text"] for row in read_jsonl(DATA / "corpus-10k.jsonl", 512)]
    rows = []
    for label, texts in (("2,048 short sentences", sentences), ("512 Debian documents (≤ 256 tokens)", documents)):
        best = {name: float("inf") for name in [*encoders, "SentenceTransformer.encode"]}
        vectors = {}
        for _ in range(3):
            for name, encoder in encoders.items():
                began = time.perf_counter()
                vectors[name] = encoder.encode(encoder.prepare(texts))
                best[name] = min(best[name], time.perf_counter() - began)
            began = time.perf_counter()
            bare.encode(texts, batch_size=32)
            best["SentenceTransformer.encode"] = min(best["SentenceTransformer.encode"], time.perf_counter() - began)
        reference = vectors["torch backend fp32"]
        for name, seconds in best.items():
            if name in vectors:
                got = vectors[name]
                cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
            else:
                cos = np.ones(1)
            rows.append((label, name, len(texts) / seconds, float(cos.min()), float(cos.mean())))
        print(f"{label}: " + ", ".join(f"{name} {len(texts) / s:.0f}/s" for name, s in best.items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the Debian retrieval set in {DATA}")
    from rayprism.platform.threads import quiet_tokenizers

    quiet_tokenizers()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    encode_rows = [] if args.skip_onnx else encode_benchmark(args)
    train_rows = [] if args.skip_train else training_benchmark(args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    if train_rows:
        baseline = train_rows[0][1]["samples_per_s"]
        print(f"Training: {args.pairs} pairs, batches of {args.batch_size} queries, documents ≤ 128 tokens\n")
        print("| trainer | samples/s | vs plain loop | steps | seconds |")
        print("|---|---|---|---|---|")
        for name, result in train_rows:
            print(f"| {name} | {result['samples_per_s']:.1f} | {result['samples_per_s'] / baseline:.2f} | "
                  f"{result['steps']} | {result['seconds']:.0f} |")
    if encode_rows:
        print("\nEncoding all-MiniLM-L6-v2, best of 3, 2 threads\n")
        print("| input | encoder | inputs/s | vs torch backend | cosine to torch, min | mean |")
        print("|---|---|---|---|---|---|")
        torch_rate = {label: rate for label, name, rate, _, _ in encode_rows if name == "torch backend fp32"}
        for label, name, rate, cos_min, cos_mean in encode_rows:
            print(f"| {label} | {name} | {rate:.0f} | {rate / torch_rate[label]:.2f} | {cos_min:.5f} | "
                  f"{cos_mean:.5f} |")


if __name__ == "__main__":
    sys.exit(main())
