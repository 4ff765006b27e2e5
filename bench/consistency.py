"""Search latency on a Milvus server: Strong reads (what the store did) against the store's Session reads.

    python bench/consistency.py [--rows 20000] [--dimensions 384] [--searches 50]

In one run, on the test suite's embedded Milvus 2.3.5 server: one dense collection of ``--rows`` random
vectors, then ``--searches`` searches of each kind, by pymilvus with ``consistency_level="Strong"`` and by the
store (:class:`~rayprism.platform.store.milvus.MilvusStore`, Session reads), alternating so that both see the
same server state:

- ``idle``: no write for half a second before (the common case: a search long after any write);
- ``after write``: the search right after a one-row upsert (what keeping a caller's own writes visible costs);
- ``after delete``: the search right after a one-row delete (Milvus 2.3 gives a delete no timestamp: the store
  waits for this host's clock instead).

Each search after a write checks that the row written (or deleted) is (or is not) its top hit: a miss counts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from pymilvus import MilvusClient
from retrieval import percentile_ms  # puts the repository on sys.path

from rayprism.platform.config import CollectionConfig
from rayprism.platform.store.milvus import MilvusStore, SearchQuery
from tests.milvus_server import milvus_server

KINDS = ("idle", "after write", "after delete")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--searches", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory, milvus_server(Path(directory)) as uri:
        store = MilvusStore(uri, flush_after_s=600)
        client = MilvusClient(uri)
        store.ensure(CollectionConfig(name="bench", bm25=False), args.dimensions)
        for start in range(0, args.rows, 5000):
            vectors = rng.standard_normal((min(5000, args.rows - start), args.dimensions)).astype(np.float32)
            store.upsert("bench", [{"id": str(start + i), "text": "", "dense": vector} for i, vector in enumerate(vectors)])
        store.flush("bench")
        time.sleep(2.0)
        seconds = {(level, kind): [] for level in ("Strong", "Session") for kind in KINDS}
        misses = {level: 0 for level in ("Strong", "Session")}

        def strong(vector: np.ndarray) -> str | None:
            found = client.search("bench", data=[vector], anns_field="dense", limit=1,
                                  search_params={"metric_type": "COSINE"}, consistency_level="Strong")[0]
            return found[0]["id"] if found else None

        def session(vector: np.ndarray) -> str | None:
            hits = store.search("bench", SearchQuery(mode="dense", k=1, dense_vector=vector, output_fields=[]))
            return hits.ids[0] if hits.ids else None

        for n in range(args.searches):
            for level, search in (("Strong", strong), ("Session", session)):
                vector = rng.standard_normal(args.dimensions).astype(np.float32)
                time.sleep(0.5)  # more than a time tick (200 ms) after the last write
                began = time.perf_counter()
                search(vector)
                seconds[level, "idle"].append(time.perf_counter() - began)
                doc_id = f"w{level}{n}"
                store.upsert("bench", [{"id": doc_id, "text": "", "dense": vector}])
                began = time.perf_counter()
                misses[level] += search(vector) != doc_id
                seconds[level, "after write"].append(time.perf_counter() - began)
                store.delete("bench", [doc_id])
                began = time.perf_counter()
                misses[level] += search(vector) == doc_id
                seconds[level, "after delete"].append(time.perf_counter() - began)
        store.drop("bench")
        store.close()
        client.close()
    print(f"Milvus 2.3.5 embedded server, {args.rows} rows x {args.dimensions} dims, {args.searches} searches each")
    print(f"{'reads':<10}" + "".join(f"{kind + ' p50/p99 ms':>26}" for kind in KINDS) + f"{'misses':>8}")
    for level in ("Strong", "Session"):
        cells = "".join(f"{percentile_ms(seconds[level, kind], 50):>17.1f} / {percentile_ms(seconds[level, kind], 99):>6.1f}"
                        for kind in KINDS)
        print(f"{level:<10}{cells}{misses[level]:>8}")


if __name__ == "__main__":
    main()
