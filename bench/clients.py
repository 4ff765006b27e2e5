"""LangChain and LlamaIndex over rayprism against the SDK: the same rankings, and what each adds per query.

    python bench/clients.py [--queries 1000] [--docs 10000] [--port 8126]

In one run:
1. starts ``rayprism serve`` (MiniLM) with a fresh Milvus Lite file;
2. ingests corpus-10k through LlamaIndex (``RayprismVectorStore.add``, the collection created by it, with its
   ``metadata`` json field): the LlamaIndex store reads back only nodes it wrote, and the other two clients
   search the same collection;
3. for every dev query, in hybrid and in dense mode, searches through the SDK (``rayprism.Client.search``,
   the service's own search: the baseline), LangChain (``RayprismVectorStore.similarity_search_with_score``)
   and a LlamaIndex retriever (``VectorStoreIndex.from_vector_store(...).as_retriever().retrieve``), k=10,
   interleaved (the order rotates from query to query), each timed around the one call;
4. prints MRR@10 side by side and p50/p99 per query, with each framework's overhead over the SDK (ratio and
   ms), and exits non-zero when a framework's MRR@10 differs from the SDK's by more than 0.005.

``--docs`` keeps the targets of the queries scored and fills up with the corpus's first other documents.
Needs ../shared/data/debian/ and the langchain and llama-index extras.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from debian import DATA, FIELDS, percentile_ms, read_jsonl, scores
from services import rayprism_service, start, stop

COLLECTION = "debian"
MODES = {"hybrid": "hybrid", "dense": "default"}
"""rayprism's search mode → the LlamaIndex query mode that answers it (its default is dense)."""
TOLERANCE = 0.005
SDK = "SDK (rayprism.Client)"
BATCH = 64


def subset(corpus: list[dict], queries: list[dict], docs: int) -> list[dict]:
    """``docs`` documents holding every query's target: the targets, then the corpus's others in order."""
    targets = {q["doc_id"] for q in queries}
    if docs < len(targets):
        raise SystemExit(f"--docs {docs}: the {len(queries)} queries have {len(targets)} targets; keep at least those")
    others = (d for d in corpus if d["id"] not in targets)
    return [d for d in corpus if d["id"] in targets] + [next(others) for _ in range(docs - len(targets))]


def ingest(store, documents: list[dict]) -> float:
    """Through LlamaIndex, as its users fill a store; docs/s."""
    from llama_index.core.schema import TextNode

    started = time.perf_counter()
    for first in range(0, len(documents), BATCH):
        store.add([TextNode(id_=str(d["id"]), text=d["text"], metadata={key: d[key] for key in FIELDS})
                   for d in documents[first:first + BATCH]])
    return len(documents) / (time.perf_counter() - started)


def settle(client, timeout_s: float = 600) -> None:
    """Wait until the collection's in-memory mirror is built (a search starts the build), so every client
    searches what the others search."""
    deadline = time.monotonic() + timeout_s
    client.search(COLLECTION, "warm up", k=1)
    while client.collection(COLLECTION).get("mirror") is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the mirror of {COLLECTION!r} was not built in {timeout_s:.0f} s")
        time.sleep(0.5)


def searchers(client, url: str) -> dict[str, Callable[[str, str], list[str]]]:
    """Each client's search of a query in a mode (rayprism's name), answering the ids ranked."""
    from llama_index.core import VectorStoreIndex

    from rayprism.integrations import langchain, llama_index

    chain = langchain.RayprismVectorStore(COLLECTION, client=client, metadata_field="metadata")
    index = VectorStoreIndex.from_vector_store(llama_index.RayprismVectorStore(COLLECTION, client=client),
                                               embed_model=llama_index.RayprismEmbedding(client=client))
    retrievers = {mode: index.as_retriever(similarity_top_k=10, vector_store_query_mode=llama_mode)
                  for mode, llama_mode in MODES.items()}
    return {
        SDK: lambda query, mode: [
            hit["id"] for hit in client.search(COLLECTION, query, k=10, mode=mode)["results"]],
        "LangChain similarity_search_with_score": lambda query, mode: [
            document.id for document, _ in chain.similarity_search_with_score(query, k=10, mode=mode)],
        "LlamaIndex retriever.retrieve": lambda query, mode: [
            hit.node.node_id for hit in retrievers[mode].retrieve(query)],
    }


def measure(search: dict[str, Callable], queries: list[dict], warmup: int):
    """Ranked ids and seconds per (mode, client), every client on every query in turn."""
    ranked = {(mode, name): [] for mode in MODES for name in search}
    seconds = {key: [] for key in ranked}
    names = list(search)
    for q in queries[:warmup]:
        for mode in MODES:
            for name in names:
                search[name](q["query"], mode)
    for i, q in enumerate(queries):
        for mode in MODES:
            for name in names[i % len(names):] + names[:i % len(names)]:
                started = time.perf_counter()
                ids = search[name](q["query"], mode)
                seconds[mode, name].append(time.perf_counter() - started)
                ranked[mode, name].append([str(doc_id) for doc_id in ids])
    return ranked, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000, help="dev queries scored and timed (default all 1000)")
    parser.add_argument("--docs", type=int, default=10_000, help="documents of corpus-10k ingested (default all)")
    parser.add_argument("--warmup", type=int, default=20, help="queries searched by every client before timing")
    parser.add_argument("--port", type=int, default=8126)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the Debian retrieval set in {DATA}")
    queries = read_jsonl(DATA / "queries-dev-10k.jsonl")[: args.queries]
    documents = subset(read_jsonl(DATA / "corpus-10k.jsonl"), queries, args.docs)
    targets = [str(q["doc_id"]) for q in queries]

    from rayprism.client import Client
    from rayprism.integrations.llama_index import RayprismVectorStore

    work = Path(tempfile.mkdtemp(prefix="rayprism-clients-"))
    config = work / "serve.yaml"
    config.write_text(json.dumps({"models": [{"name": "minilm", "torch_threads": os.cpu_count()}],
                                  "store": {"uri": str(work / "bench.db")}}))
    service = rayprism_service("rayprism", config, args.port)
    process = start(service, work / "serve.log")
    try:
        with Client(service.url(""), timeout_s=120) as client:
            store = RayprismVectorStore(COLLECTION, client=client, model="minilm", fields=FIELDS)
            rate = ingest(store, documents)
            print(f"ingested {len(documents)} docs through LlamaIndex: {rate:.1f} docs/s", flush=True)
            settle(client)
            ranked, seconds = measure(searchers(client, service.url("")), queries, args.warmup)
    finally:
        stop(process)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ncorpus-10k: {len(documents)} documents, {len(queries)} dev queries, k=10, one at a time, "
          f"{len(MODES) * 3} searches per query interleaved\n")
    print("| mode | client | MRR@10 | R@10 | p50 ms | p99 ms | p50 ÷ SDK | p50 − SDK, ms | p99 − SDK, ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    differ = []
    for mode, name in ranked:
        mrr, _, r10 = scores(ranked[mode, name], targets)
        sdk_mrr = scores(ranked[mode, SDK], targets)[0]
        p50, p99 = percentile_ms(seconds[mode, name], 50), percentile_ms(seconds[mode, name], 99)
        sdk_p50, sdk_p99 = percentile_ms(seconds[mode, SDK], 50), percentile_ms(seconds[mode, SDK], 99)
        if abs(mrr - sdk_mrr) > TOLERANCE:
            differ.append(f"{mode}, {name}: MRR@10 {mrr:.4f} against the SDK's {sdk_mrr:.4f}")
        print(f"| {mode} | {name} | {mrr:.4f} | {r10:.3f} | {p50:.1f} | {p99:.1f} | {p50 / sdk_p50:.2f} | "
              f"{p50 - sdk_p50:+.1f} | {p99 - sdk_p99:+.1f} |")
    if differ:
        raise SystemExit("MRR@10 differs from the SDK's by more than 0.005:\n" + "\n".join(differ))


if __name__ == "__main__":
    main()
