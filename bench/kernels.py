"""rayprism's numba kernels and codecs against a baseline measured in the same run.

    python bench/kernels.py [--only hamming int8 maxsim fde binary] [--quick]

1. hamming: ``hamming_topk`` against numpy (``np.bitwise_count``, one query at a time) and
   FAISS ``IndexBinaryFlat`` on 1,000,000 random 256-bit codes, 100 queries, k=10.
2. int8: ``int8_dot_topk`` against numpy (dequantise, matmul, argpartition) on 200,000
   random 384-d vectors through rayprism's int8 codec, and float32 numpy for reference.
3. maxsim: ``maxsim`` against numpy (matmul, ``maximum.reduceat``) over the Debian 10k
   corpus's MiniLM token vectors, one query at a time.
4. fde: MUVERA encoding rate; the share of exact-Chamfer top-1 documents among 200 FDE
   candidates; FDE candidates + exact MaxSim rerank against brute-force MaxSim over the
   corpus at equal Recall@10 (on the dev queries' relevant documents, within 0.005), for
   the paper's configuration and a multi-vector collection's default (``multivector.fde``,
   8 partitions instead of 32); the latter also through the store's own routes, as a
   ``mode: multivector`` search runs them in the mirror (FDE scan, then the token route's rerank).
5. binary: binary codes (``pack_bits`` + ``hamming_topk``) and int8 codes, alone and with
   rescoring, against exact float search on the Debian 10k dense MiniLM vectors: Recall@10
   and overlap with the exact float top 10.

Timings are best of 3 in this process. Token and dense vectors of the Debian 10k corpus
(MiniLM, padding and [CLS]/[SEP] removed, L2-normalised) are computed once, in a few
minutes, and cached under bench/results/, as is the exact Chamfer top 10 of each query.
Needs ../shared/data/debian/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from rayprism.numba_kernels import hamming_topk, int8_dot_topk, maxsim, pack_bits
from rayprism.platform.codecs.muvera import FDEConfig, encode_documents, encode_queries, encode_query
from rayprism.platform.codecs.quantize import calibrate_int8, from_int8, to_int8
from rayprism.platform.config import FDEOptions
from rayprism.platform.store.routes import DenseRoute, RowTable
from rayprism.platform.store.tokens import TokenRoute, fde_config

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "debian"
RESULTS = REPO / "bench" / "results"
PARTS = ["hamming", "int8", "maxsim", "fde", "binary"]
EQUAL_RECALL = 0.005  # Recall@10 this close counts as equal: less than one standard error on 1,000 queries


def race(runs: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, float]:
    """Seconds of each run's fastest of ``repeats`` rounds; every round runs each once, in turn,
    so load from other processes on a shared machine falls on all of them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def table(header: list[str], rows: list[list]) -> None:
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{cell:.3g}" if isinstance(cell, float) else str(cell) for cell in row) + " |")


# ---------------------------------------------------------------- 1. hamming


def bench_hamming(quick: bool) -> None:
    import faiss

    n, m, k = (100_000 if quick else 1_000_000), 100, 10
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (m, 32), dtype=np.uint8)
    words, query_words = db.view(np.uint64), queries.view(np.uint64)

    def numpy_topk():
        for query in query_words:
            distances = np.bitwise_count(words ^ query).sum(axis=1)
            top = np.argpartition(distances, k)[:k]
            top[np.argsort(distances[top], kind="stable")]

    index = faiss.IndexBinaryFlat(256)
    index.add(db)
    _, ours_distances = hamming_topk(db, queries, k)  # compiles (or loads the cache)
    faiss_distances, _ = index.search(queries, k)
    same = np.array_equal(ours_distances, faiss_distances)
    times = race({"ours": lambda: hamming_topk(db, queries, k), "faiss": lambda: index.search(queries, k),
                  "numpy": numpy_topk})
    ours, base_faiss, base_numpy = times["ours"], times["faiss"], times["numpy"]
    print(f"\nhamming_topk: {n:,} x 256-bit codes, {m} queries, k={k}; distances identical to FAISS: {same}")
    table(["implementation", "ms", "rayprism / it"], [
        ["rayprism hamming_topk", ours * 1e3, 1.0],
        [f"FAISS IndexBinaryFlat ({faiss.omp_get_max_threads()} threads)", base_faiss * 1e3, ours / base_faiss],
        ["numpy bitwise_count + argpartition", base_numpy * 1e3, ours / base_numpy],
    ])


# ---------------------------------------------------------------- 2. int8


def bench_int8(quick: bool) -> None:
    n, d, k = (50_000 if quick else 200_000), 384, 10
    rng = np.random.default_rng(1)
    vectors = unit(rng.standard_normal((n, d), dtype=np.float32))
    queries = unit(rng.standard_normal((100, d), dtype=np.float32))
    ranges = calibrate_int8(vectors[:10_000])
    codes = to_int8(vectors, ranges)

    def numpy_int8(batch):
        scores = batch @ from_int8(codes, ranges).T
        return np.argpartition(-scores, k, axis=1)[:, :k]

    def numpy_float(batch):
        return np.argpartition(-(batch @ vectors.T), k, axis=1)[:, :k]

    int8_dot_topk(codes, ranges, queries[:1], k)
    rows = []
    for label, batch in (("1 query", queries[:1]), ("100 queries", queries)):
        times = race({"ours": lambda batch=batch: int8_dot_topk(codes, ranges, batch, k),
                      "dequantised": lambda batch=batch: numpy_int8(batch), "exact": lambda batch=batch: numpy_float(batch)})
        ours, dequantised, exact = times["ours"], times["dequantised"], times["exact"]
        rows.append([label, ours * 1e3, dequantised * 1e3, ours / dequantised, exact * 1e3, ours / exact])
    print(f"\nint8_dot_topk: {n:,} x {d} int8 codes (rayprism's int8 codec), k={k}")
    table(["queries", "rayprism ms", "numpy on the codes ms", "ratio", "numpy float32 ms", "ratio"], rows)


# ---------------------------------------------------------------- shared: the Debian vectors


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as lines:
        return [json.loads(line) for line in lines]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def debian_vectors() -> dict[str, np.ndarray]:
    """Token vectors (float32, unit length, one block per text) and dense vectors of the
    corpus-10k documents and dev queries, from the cache or computed with MiniLM."""
    cache = RESULTS / "debian-10k-tokens.npz"
    if not cache.exists():
        build_debian_cache(cache)
    stored = np.load(cache)
    vectors = {name: stored[name] for name in stored.files}
    for name in ("doc_tokens", "query_tokens"):  # kept as float16 on disk
        vectors[name] = unit(vectors[name].astype(np.float32))
    return vectors


def build_debian_cache(cache: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import DEFAULT_MODEL_SOURCE
    from rayprism.platform.models.source import resolve_source

    print("computing MiniLM token vectors for the Debian 10k corpus (minutes, once)...", flush=True)
    model = SentenceTransformer(resolve_source(DEFAULT_MODEL_SOURCE), device="cpu")
    special = list(model.tokenizer.all_special_ids)

    def encode(texts: list[str]):
        pieces, dense = [], []
        for output in model.encode(texts, output_value=None, batch_size=32):
            keep = (output["attention_mask"].numpy() == 1) & ~np.isin(output["input_ids"].numpy(), special)
            pieces.append(unit(output["token_embeddings"].numpy()[keep]))
            dense.append(output["sentence_embedding"].numpy())
        offsets = np.concatenate([[0], np.cumsum([len(piece) for piece in pieces])]).astype(np.int64)
        return np.concatenate(pieces).astype(np.float16), offsets, np.stack(dense).astype(np.float32)

    documents = read_jsonl(DATA / "corpus-10k.jsonl")
    assert [d["id"] for d in documents] == list(range(len(documents))), "corpus ids are row numbers"
    query_tokens, query_offsets, query_dense = encode([q["query"] for q in read_jsonl(DATA / "queries-dev-10k.jsonl")])
    doc_tokens, doc_offsets, doc_dense = encode([d["text"] for d in documents])
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(cache, doc_tokens=doc_tokens, doc_offsets=doc_offsets, doc_dense=doc_dense,
             query_tokens=query_tokens, query_offsets=query_offsets, query_dense=query_dense)


def tokens_of(vectors: dict, kind: str, i: int) -> np.ndarray:
    offsets = vectors[f"{kind}_offsets"]
    return vectors[f"{kind}_tokens"][offsets[i] : offsets[i + 1]]


def recall_at_10(ranked: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean([target in row[:10] for row, target in zip(ranked, targets)]))


def overlap_at_10(ranked: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(row[:10]) & set(best[:10])) / 10 for row, best in zip(ranked, exact)]))


# ---------------------------------------------------------------- 3. maxsim


def bench_maxsim(quick: bool, vectors: dict) -> None:
    doc_tokens, offsets = vectors["doc_tokens"], vectors["doc_offsets"]
    assert (np.diff(offsets) > 0).all(), "numpy's reduceat needs every document to have tokens"
    queries = [tokens_of(vectors, "query", i) for i in range(5 if quick else 20)]

    def numpy_maxsim(query):
        return np.maximum.reduceat(doc_tokens @ query.T, offsets[:-1], axis=0).sum(axis=1)

    np.testing.assert_allclose(maxsim(queries[0], doc_tokens, offsets), numpy_maxsim(queries[0]), rtol=1e-4, atol=1e-4)
    times = race({"ours": lambda: [maxsim(query, doc_tokens, offsets) for query in queries],
                  "numpy": lambda: [numpy_maxsim(query) for query in queries]})
    ours, base = times["ours"] / len(queries), times["numpy"] / len(queries)
    print(f"\nmaxsim: one query (~{np.mean([len(q) for q in queries]):.0f} tokens) against {len(offsets) - 1:,} "
          f"documents, {len(doc_tokens):,} token vectors x {doc_tokens.shape[1]}")
    table(["implementation", "ms per query", "rayprism / it"],
          [["rayprism maxsim", ours * 1e3, 1.0], ["numpy matmul + maximum.reduceat", base * 1e3, ours / base]])


# ---------------------------------------------------------------- 4. fde


def exact_chamfer_top10(vectors: dict, n_queries: int) -> np.ndarray:
    """Brute-force MaxSim top 10 of the first ``n_queries`` queries (cached: minutes to compute)."""
    cache = RESULTS / f"chamfer-top10-{len(vectors['doc_offsets']) - 1}x{n_queries}.npy"
    source = RESULTS / "debian-10k-tokens.npz"
    if cache.exists() and cache.stat().st_mtime > source.stat().st_mtime:
        return np.load(cache)
    print(f"computing the exact Chamfer top 10 of {n_queries} queries (minutes, once)...", flush=True)
    top = np.empty((n_queries, 10), dtype=np.int64)
    for i in range(n_queries):
        scores = maxsim(tokens_of(vectors, "query", i), vectors["doc_tokens"], vectors["doc_offsets"])
        best = np.argpartition(-scores, 10)[:10]
        top[i] = best[np.argsort(-scores[best], kind="stable")]
    np.save(cache, top)
    return top


def bench_fde(quick: bool, vectors: dict, targets: np.ndarray) -> None:
    n_queries = 100 if quick else len(targets)
    targets = targets[:n_queries]
    exact = exact_chamfer_top10(vectors, n_queries)
    dim = vectors["doc_tokens"].shape[1]
    fde_one_config(FDEConfig(dim=dim), vectors, targets, exact)  # the paper's defaults
    fde_one_config(fde_config(FDEOptions().model_dump(), dim), vectors, targets, exact, served=True)


def served_routes(vectors: dict, documents: np.ndarray) -> tuple[DenseRoute, TokenRoute]:
    """A multi-vector collection's mirror routes over the corpus: its FDEs (inner product) and token vectors."""
    rows = RowTable()
    dense, tokens = DenseRoute(rows, documents.shape[1], normalise=False), TokenRoute(rows)
    offsets = vectors["doc_offsets"]
    new_rows, _ = rows.assign(list(range(len(documents))))
    dense.write(new_rows, dense.prepare(documents))
    tokens.write(new_rows, [vectors["doc_tokens"][offsets[i] : offsets[i + 1]] for i in range(len(documents))])
    return dense, tokens


def fde_one_config(cfg: FDEConfig, vectors: dict, targets: np.ndarray, exact: np.ndarray, *, served: bool = False
                   ) -> None:
    n_queries = len(targets)
    brute_recall = recall_at_10(exact, targets)
    query_offsets = vectors["query_offsets"][: n_queries + 1]
    started = time.perf_counter()
    documents = encode_documents(vectors["doc_tokens"], vectors["doc_offsets"], cfg)
    docs_per_s = len(documents) / (time.perf_counter() - started)
    queries = encode_queries(vectors["query_tokens"][: query_offsets[-1]], query_offsets, cfg)
    candidates = np.argsort(-(queries @ documents.T), axis=1, kind="stable")[:, :1000]
    top1_in_200 = float(np.mean([best[0] in row[:200] for row, best in zip(candidates, exact)]))
    top10_in_200 = float(np.mean([len(set(best) & set(row[:200])) / 10 for row, best in zip(candidates, exact)]))
    print(f"\nMUVERA FDE {cfg}: {cfg.output_dim} dimensions; encoding {docs_per_s:,.0f} documents/s")
    print(f"exact-Chamfer top-1 found within 200 FDE candidates: {top1_in_200:.3f} (goal >= 0.90); "
          f"exact top 10 within 200: {top10_in_200:.3f}")

    rows = [["brute-force MaxSim (exact Chamfer)", "-", brute_recall, 1.0]]
    recalls = {}
    for kept in (10, 20, 50, 100, 200, 500, 1000):
        reranked = np.stack([rerank(vectors, i, candidates[i, :kept]) for i in range(n_queries)])
        recalls[kept] = recall_at_10(reranked, targets)
        rows.append([f"FDE top-{kept} + MaxSim rerank", kept, recalls[kept], overlap_at_10(reranked, exact)])
    print(f"Recall@10 on {n_queries} dev queries' relevant documents; overlap with the exact Chamfer top 10")
    table(["retriever", "candidates", "Recall@10", "overlap@10"], rows)
    # the fewest candidates from which on Recall@10 stays within EQUAL_RECALL of brute force's
    equal = [kept for kept in recalls if all(recalls[more] >= brute_recall - EQUAL_RECALL
                                             for more in recalls if more >= kept)]
    count = equal[0] if equal else 1000
    print(f"equal Recall@10 taken as within {EQUAL_RECALL} of brute force ({EQUAL_RECALL * n_queries:.0f} of "
          f"{n_queries} queries): {count} candidates" + ("" if equal else " (not reached; timing 1000)"))

    ranges = calibrate_int8(documents)
    codes = to_int8(documents, ranges)

    def fde_float(i):
        query = encode_query(tokens_of(vectors, "query", i), cfg)
        return rerank(vectors, i, np.argpartition(-(documents @ query), count)[:count])

    def fde_int8(i):
        query = encode_query(tokens_of(vectors, "query", i), cfg)
        return rerank(vectors, i, int8_dot_topk(codes, ranges, query[None], count)[0][0])

    def brute(i):
        scores = maxsim(tokens_of(vectors, "query", i), vectors["doc_tokens"], vectors["doc_offsets"])
        return np.argpartition(-scores, 10)[:10]

    searches = {"brute-force MaxSim over the corpus": brute,
                f"FDE float32 scan, top {count}, MaxSim rerank": fde_float,
                f"FDE int8 scan (int8_dot_topk), top {count}, MaxSim rerank": fde_int8}
    if served:
        dense_route, token_route = served_routes(vectors, documents)

        def served_search(i):
            query_tokens = tokens_of(vectors, "query", i)
            candidates = [doc for doc, _ in dense_route.top_k(encode_query(query_tokens, cfg), count)]
            return np.array([doc for doc, _ in token_route.rerank(query_tokens, candidates, 10)])

        searches[f"store routes of mode multivector (DenseRoute top {count}, TokenRoute.rerank)"] = served_search
    timed = range(min(n_queries, 30))
    times = race({name: lambda search=search: [search(i) for i in timed] for name, search in searches.items()})
    brute_s = times["brute-force MaxSim over the corpus"]
    rows = []
    for name, search in searches.items():
        recall = brute_recall if search is brute else recall_at_10(
            np.stack([search(i) for i in range(n_queries)]), targets)
        rows.append([name, times[name] / len(timed) * 1e3, recall, brute_s / times[name]])
    print(f"one query at a time ({len(timed)} queries, best of 3), query encoding included; goal: >= 10x faster "
          "at equal Recall@10")
    table(["search", "ms per query", "Recall@10", "speed-up over brute force"], rows)


def rerank(vectors: dict, i: int, candidates: np.ndarray) -> np.ndarray:
    """The 10 best of ``candidates`` by exact MaxSim, best first."""
    candidates = np.asarray(candidates, dtype=np.int64)
    scores = maxsim(tokens_of(vectors, "query", i), vectors["doc_tokens"], vectors["doc_offsets"], candidates)
    return candidates[np.argsort(-scores, kind="stable")[:10]]


# ---------------------------------------------------------------- 5. binary and int8 rescoring


def bench_binary(quick: bool, vectors: dict, targets: np.ndarray) -> None:
    documents = unit(vectors["doc_dense"])
    queries = unit(vectors["query_dense"][: 100 if quick else None])
    targets = targets[: len(queries)]
    k = 10

    def exact_search():
        scores = queries @ documents.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1)

    exact = exact_search()
    exact_recall = recall_at_10(exact, targets)
    document_bits, query_bits = pack_bits(documents), pack_bits(queries)
    ranges = calibrate_int8(documents)
    codes = to_int8(documents, ranges)

    def rescore(candidates: np.ndarray, stored: np.ndarray) -> np.ndarray:
        scores = np.einsum("qd,qcd->qc", queries, stored[candidates])
        return np.take_along_axis(candidates, np.argsort(-scores, axis=1, kind="stable")[:, :k], 1)

    searches = [("exact float32 (baseline)", documents.nbytes, exact_search)]
    searches.append(("binary, Hamming top 10", document_bits.nbytes, lambda: hamming_topk(document_bits, query_bits, k)[0]))
    for multiplier in (2, 4, 10):
        searches.append((f"binary top-{k * multiplier} + float32 rescoring", document_bits.nbytes,
                         lambda m=multiplier: rescore(hamming_topk(document_bits, query_bits, k * m)[0], documents)))
    dequantised = from_int8(codes, ranges)
    searches.append(("binary top-40 + int8 rescoring", document_bits.nbytes,
                     lambda: rescore(hamming_topk(document_bits, query_bits, 4 * k)[0], dequantised)))
    searches.append(("int8 (int8_dot_topk) top 10", codes.nbytes, lambda: int8_dot_topk(codes, ranges, queries, k)[0]))
    searches.append(("int8 top-40 + float32 rescoring", codes.nbytes,
                     lambda: rescore(int8_dot_topk(codes, ranges, queries, 4 * k)[0], documents)))
    times = race({name: search for name, _, search in searches})
    rows = []
    for name, tier_bytes, search in searches:
        ranked = search()
        recall = recall_at_10(ranked, targets)
        rows.append([name, f"{tier_bytes / len(documents):.0f}", f"{documents.nbytes / tier_bytes:.0f}x", recall,
                     recall / exact_recall, overlap_at_10(ranked, exact), times[name] / len(queries) * 1e3])
    print(f"\nDebian 10k dense MiniLM vectors, {len(queries)} dev queries; goal: binary + rescoring keeps "
          ">= 0.97 of exact float Recall@10 with a coarse tier 32x smaller than float32")
    table(["search", "coarse tier bytes/doc", "smaller than float32", "Recall@10", "of exact float",
           "overlap with exact top 10", "ms per query (batch)"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS, help="run only these parts")
    parser.add_argument("--quick", action="store_true", help="small sizes and query counts: a smoke run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"numba threads: {numba.get_num_threads()}, cores: {os.cpu_count()}, quick: {args.quick}")
    if "hamming" in args.only:
        bench_hamming(args.quick)
    if "int8" in args.only:
        bench_int8(args.quick)
    if {"maxsim", "fde", "binary"} & set(args.only):
        if not DATA.exists():
            raise SystemExit(f"maxsim, fde and binary need the Debian retrieval set in {DATA}")
        vectors = debian_vectors()
        targets = np.array([q["doc_id"] for q in read_jsonl(DATA / "queries-dev-10k.jsonl")])
        if "maxsim" in args.only:
            bench_maxsim(args.quick, vectors)
        if "fde" in args.only:
            bench_fde(args.quick, vectors, targets)
        if "binary" in args.only:
            bench_binary(args.quick, vectors, targets)
    print(f"\nfinished at {time.strftime('%Y-%m-%d %H:%M')}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
