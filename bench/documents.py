"""Long documents: a chunked collection against an unchunked one and a plain script, on the manual pages.

    python bench/documents.py [--port 8125] [--latency-queries 300] [--docs N]

In one run:
1. starts ``rayprism serve`` with two collections of the same pages in a fresh Milvus Lite file:
   ``chunked`` (``chunking: {max_tokens: 256, overlap_tokens: 32}``, each page's name and section as its
   ``title``) and ``plain`` (unchunked: a page is embedded from its first 256 tokens; pages over Milvus's
   64 KB text limit are refused);
2. ingests the corpus into each through the documents endpoint (the path ``rayprism ingest`` takes), timed;
   the chunked collection in slices of 64 pages, each followed by the plain script's chunk-and-encode of the
   same slice in this process (the ingest baseline, measured at the same minutes on the same machine; the
   service's Ray workers run at nice 0, as this process does, instead of Ray's 15); besides the rates, the CPU
   seconds each side spends per page (the service's processes and this process's HTTP client, against this
   process alone), which a shared machine's load moves far less than wall time;
3. scores the 500 dev description queries (MRR@10, R@10, one hit per page) in hybrid (the default), dense
   and sparse modes, and the 300 deep queries (a sentence from deep inside a long page): the page in the top
   10, and for the chunked collection its top passage holding the sentence;
4. times hybrid search through HTTP on both, interleaved (p50, p99, query embedding included);
5. stops the service and scores the plain script: sentence-transformers on 180-word windows (30 overlap),
   a page scored by its best window, BM25 (k1 1.2, b 0.75) over whole pages, the same weighted fusion
   (0.5/0.5 of min-max normalised top-100 lists).

Needs ../shared/data/manpages/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
from services import rayprism_service, start, stop

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "manpages"
FIELDS = {"title": "varchar", "section": "int64"}
CHUNKING = {"max_tokens": 256, "overlap_tokens": 32}
MODES = ("hybrid", "dense", "sparse")
WINDOW_WORDS, WINDOW_OVERLAP = 180, 30
"""The plain script's windows, as in the data set's README."""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def ranking_scores(ranked: list[list[str]], targets: list[str]) -> tuple[float, float]:
    """MRR@10 and R@10."""
    mrr = r10 = 0.0
    for ids, target in zip(ranked, targets):
        if target in ids[:10]:
            mrr += 1 / (ids.index(target) + 1)
            r10 += 1
    return mrr / len(targets), r10 / len(targets)


def normalised(text: str) -> str:
    return " ".join(text.split())


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q) * 1e3)


def source_documents(pages: list[dict]):
    from rayprism.client import SourceDocument

    return [SourceDocument(page["id"], {"id": page["id"], "text": page["text"],
                                        "title": f"{page['name']}({page['section']})", "section": page["section"]})
            for page in pages]


def tree_cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of a process and every process under it (a service and the Ray it started) so far."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def ingest(client, name: str, pages: list[dict], batch_size: int, service: psutil.Process,
           plain: PlainScript | None = None, slice_pages: int = 64):
    """Ingest ``pages`` into ``name``; with ``plain``, in slices of ``slice_pages``, each followed by the plain
    script's chunk-and-encode of the same slice, so that both rates are measured on the same machine at the same
    minutes (a shared box's load drifts over the hour a full run takes). Returns the summary and the CPU seconds
    spent (``service``'s processes and this process's client)."""
    from rayprism.client import IngestSummary

    total = IngestSummary()
    cpu = 0.0
    step = slice_pages if plain is not None else len(pages)
    for first in range(0, len(pages), step):
        part = pages[first:first + step]
        cpu_before = tree_cpu_seconds(service) + time.process_time()
        summary = client.ingest(name, source_documents(part), batch_size=batch_size)
        cpu += tree_cpu_seconds(service) + time.process_time() - cpu_before
        total.upserted += summary.upserted
        total.rejected += summary.rejected
        total.seconds += summary.seconds
        if plain is not None:
            plain.encode(part)
            done = first + len(part)
            print(f"  {done}/{len(pages)} pages: {name} {total.docs_per_s:.2f} pages/s ({cpu / done:.2f} CPU s/page), "
                  f"plain script {plain.ingest_rate:.2f} pages/s ({plain.cpu_seconds / done:.2f} CPU s/page)",
                  flush=True)
    print(f"{name}: ingested {total.upserted} pages in {total.seconds:.0f} s ({total.docs_per_s:.2f} pages/s), "
          f"refused {len(total.rejected)}", flush=True)
    return total, cpu


def search_ids(client, name: str, query: str, **options) -> tuple[list[str], list[dict]]:
    hits = client.search(name, query, k=10, **options)["results"]
    return [hit["id"] for hit in hits], hits


def rayprism_runs(args, pages, queries, deep, plain: PlainScript) -> dict:
    work = Path(tempfile.mkdtemp(prefix="rayprism-documents-"))
    config = {
        "models": [{"name": "minilm", "torch_threads": os.cpu_count()}],
        "store": {"uri": str(work / "bench.db")},
        "collections": [{"name": "chunked", "fields": FIELDS, "chunking": CHUNKING},
                        {"name": "plain", "fields": FIELDS}],
    }
    config_path = work / "serve.yaml"
    config_path.write_text(json.dumps(config))
    from rayprism.client import Client

    url = f"http://127.0.0.1:{args.port}"
    service = start(rayprism_service("rayprism", config_path, args.port, worker_niceness=0), work / "serve.log")
    service_processes = psutil.Process(service.pid)
    results: dict = {"quality": {}, "deep": {}, "ingest": {}, "latency": {}}
    targets = [q["id"] for q in queries]
    try:
        with Client(url, timeout_s=900) as client:
            for name, interleaved in (("chunked", plain), ("plain", None)):
                summary, cpu = ingest(client, name, pages, args.batch_size, service_processes, interleaved)
                results["ingest"][name] = (summary.docs_per_s, summary.upserted, len(summary.rejected), cpu)
            time.sleep(3)
            for name in ("chunked", "plain"):
                for mode in MODES:
                    ranked = [search_ids(client, name, q["query"], mode=mode)[0] for q in queries]
                    results["quality"][(name, mode)] = ranking_scores(ranked, targets)
                    print(f"{name} {mode}: MRR@10 {results['quality'][(name, mode)][0]:.3f} "
                          f"R@10 {results['quality'][(name, mode)][1]:.3f}", flush=True)
                in_top10 = passage_holds = 0
                for q in deep:
                    ids, hits = search_ids(client, name, q["query"])
                    in_top10 += q["id"] in ids
                    hit = next((hit for hit in hits if hit["id"] == q["id"]), None)
                    if hit is not None and hit.get("passages"):
                        passage_holds += normalised(q["query"]) in normalised(hit["passages"][0]["text"])
                results["deep"][name] = (in_top10 / len(deep), passage_holds / len(deep))
                print(f"{name} deep: top-10 {results['deep'][name][0]:.3f}, top passage holds the sentence "
                      f"{results['deep'][name][1]:.3f}", flush=True)
        timings: dict[str, list[float]] = {"chunked": [], "plain": []}
        with httpx.Client(base_url=url, timeout=60) as http:
            for q in queries[: args.latency_queries]:  # interleaved: both see the same machine
                for name, seconds in timings.items():
                    started = time.perf_counter()
                    http.post(f"/v1/collections/{name}/search", json={"query": q["query"], "k": 10}).raise_for_status()
                    seconds.append(time.perf_counter() - started)
        results["latency"] = {name: (percentile_ms(s, 50), percentile_ms(s, 99)) for name, s in timings.items()}
    finally:
        stop(service)
        shutil.rmtree(work, ignore_errors=True)
    return results


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class PageBm25:
    """BM25 over whole pages (k1 1.2, b 0.75), as the plain script scores them."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75):
        self.counts = [Counter(tokens(text)) for text in texts]
        lengths = np.array([sum(c.values()) for c in self.counts], dtype=np.float64)
        self.norm = k1 * (1 - b + b * lengths / lengths.mean())
        self.k1 = k1
        df = Counter(term for c in self.counts for term in c)
        n = len(texts)
        self.idf = {term: math.log((n - f + 0.5) / (f + 0.5) + 1) for term, f in df.items()}
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for doc, c in enumerate(self.counts):
            for term, f in c.items():
                self.postings.setdefault(term, []).append((doc, f))

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        scores = np.zeros(len(self.counts))
        for term in set(tokens(query)):
            for doc, f in self.postings.get(term, ()):
                scores[doc] += self.idf[term] * f * (self.k1 + 1) / (f + self.norm[doc])
        best = np.argsort(-scores)[:k]
        return [(int(doc), float(scores[doc])) for doc in best if scores[doc] > 0]


def windows(text: str) -> list[str]:
    words = text.split()
    step = WINDOW_WORDS - WINDOW_OVERLAP
    return [" ".join(words[start:start + WINDOW_WORDS]) for start in range(0, max(1, len(words) - WINDOW_OVERLAP), step)]


class PlainScript:
    """The data set README's plain script: sentence-transformers on word windows, a page scored by its best
    window, BM25 over whole pages, the same weighted fusion. Its chunk-and-encode time is the ingest baseline."""

    def __init__(self):
        from sentence_transformers import SentenceTransformer

        from rayprism.platform.config import DEFAULT_MODEL_SOURCE
        from rayprism.platform.models.source import resolve_source

        self.model = SentenceTransformer(resolve_source(DEFAULT_MODEL_SOURCE), device="cpu")
        self.owner: list[int] = []
        self.parts: list[np.ndarray] = []
        self.pages = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    @property
    def ingest_rate(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0

    def encode(self, pages: list[dict]) -> None:
        """Chunk and encode the next ``pages`` (in corpus order), timed."""
        started, cpu_before = time.perf_counter(), time.process_time()
        texts = []
        for index, page in enumerate(pages, start=self.pages):
            for window in windows(page["text"]):
                self.owner.append(index)
                texts.append(window)
        self.parts.append(self.model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True))
        self.pages += len(pages)
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu_before

    def score(self, pages, queries, latency_queries: int) -> dict:
        from rayprism.platform.store.fusion import weighted

        assert self.pages == len(pages), "encode every page first"
        print(f"plain script: {len(self.owner)} windows, chunk-and-encode {self.ingest_rate:.2f} pages/s", flush=True)
        vectors, owner = np.concatenate(self.parts), np.asarray(self.owner)
        bm25 = PageBm25([page["text"] for page in pages])
        ids = [page["id"] for page in pages]

        def search(query: str) -> list[str]:
            vector = self.model.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]
            best = np.full(len(pages), -np.inf)
            np.maximum.at(best, owner, vectors @ vector)
            top = np.argsort(-best)[:100]
            dense = [(int(doc), float(best[doc])) for doc in top]
            fused = weighted([dense, bm25.top(query, 100)], [0.5, 0.5])
            return [ids[doc] for doc, _ in fused[:10]]

        ranked, seconds = [], []
        for q in queries:
            started = time.perf_counter()
            ranked.append(search(q["query"]))
            seconds.append(time.perf_counter() - started)
        mrr, r10 = ranking_scores(ranked, [q["id"] for q in queries])
        print(f"plain script hybrid: MRR@10 {mrr:.3f} R@10 {r10:.3f}", flush=True)
        return {"quality": (mrr, r10), "ingest": self.ingest_rate,
                "latency": (percentile_ms(seconds[:latency_queries], 50), percentile_ms(seconds[:latency_queries], 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8125)
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16, help="pages per upsert request")
    parser.add_argument("--docs", type=int, default=None, help="first N pages only, with their queries (a quick look)")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the manual pages in {DATA}")
    pages = read_jsonl(DATA / "corpus.jsonl")[: args.docs]
    kept = {page["id"] for page in pages}
    queries = [q for q in read_jsonl(DATA / "queries-dev.jsonl") if q["id"] in kept]
    deep = [q for q in read_jsonl(DATA / "queries-deep-dev.jsonl") if q["id"] in kept]

    script = PlainScript()
    ours = rayprism_runs(args, pages, queries, deep, script)
    plain = script.score(pages, queries, args.latency_queries)

    print(f"\n{len(pages)} pages, {len(queries)} dev description queries, {len(deep)} deep queries\n")
    print("| retriever | MRR@10 | R@10 |")
    print("|---|---|---|")
    for (name, mode), (mrr, r10) in ours["quality"].items():
        print(f"| rayprism {name}, {mode} | {mrr:.3f} | {r10:.3f} |")
    print(f"| plain script (best 180-word window + page BM25, weighted) | {plain['quality'][0]:.3f} | "
          f"{plain['quality'][1]:.3f} |")
    chunked, unchunked = ours["quality"][("chunked", "hybrid")][0], ours["quality"][("plain", "hybrid")][0]
    print(f"\nchunked − unchunked hybrid MRR@10: {chunked - unchunked:+.3f}")
    print("\n| deep queries (hybrid) | page in top 10 | top passage holds the sentence |")
    print("|---|---|---|")
    for name, (top10, passage) in ours["deep"].items():
        print(f"| rayprism {name} | {top10:.3f} | {passage:.3f} |")
    print("\n| measure | chunked | unchunked | ratio | plain script |")
    print("|---|---|---|---|---|")
    (c50, c99), (u50, u99) = ours["latency"]["chunked"], ours["latency"]["plain"]
    print(f"| hybrid search p50, ms (HTTP, query embedding included) | {c50:.1f} | {u50:.1f} | {c50 / u50:.2f} | "
          f"{plain['latency'][0]:.1f} (in process) |")
    print(f"| hybrid search p99, ms | {c99:.1f} | {u99:.1f} | {c99 / u99:.2f} | {plain['latency'][1]:.1f} |")
    chunked_rate, stored, _, chunked_cpu = ours["ingest"]["chunked"]
    plain_rate, plain_stored, refused, _ = ours["ingest"]["plain"]
    print(f"| ingest, pages/s | {chunked_rate:.2f} | {plain_rate:.2f} | {chunked_rate / plain_rate:.2f} | "
          f"{plain['ingest']:.2f} (chunk and encode) |")
    print(f"| pages stored | {stored} | {plain_stored} ({refused} refused) | — | — |")
    print(f"| ingest CPU seconds per page | {chunked_cpu / stored:.2f} | — | — | {script.cpu_seconds / script.pages:.2f} |")
    print(f"\nchunked ingest ÷ plain script's chunk-and-encode rate: {chunked_rate / plain['ingest']:.2f} "
          f"(by CPU seconds per page: {(script.cpu_seconds / script.pages) / (chunked_cpu / stored):.2f})")
    print(f"search p50 ms, median of the two: {statistics.median([c50, u50]):.1f}")


if __name__ == "__main__":
    main()
