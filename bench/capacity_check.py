"""The capacity model's check at scale: N precomputed vectors in a Milvus Lite store, the store's mirror measured.

    python bench/capacity_check.py [--rows 1000000] [--fit-rows 100000,300000] [--tiers float32,binary,int8]
                                   [--out bench/capacity-check.json]

For each tier (a dense collection with no compression, ``compression: binary``, ``compression: int8``), in one run,
the collection grows through ``--fit-rows`` to ``--rows``; at each size:

1. load: unit-length random 384-d float32 vectors (numpy, seeded) added up to that size (the collection made by the
   store layer, :class:`~rayprism.platform.store.milvus.MilvusStore`; rows inserted by pymilvus), then one flush;
2. restart: a fresh Python process (what a restarted store replica is) opens the store and loads the collection
   (Milvus Lite runs in that process: its RSS growth is reported apart), builds the collection's in-memory mirror
   (the float vectors, or the tier's codes encoded from them) and reports the time it took, wall and CPU, and the
   RSS growth it caused (the mirror's memory), then runs dense top-10 searches through ``MilvusStore.search``
   (``--queries`` at the last size: p50 / p99 wall, and the process's CPU seconds per search), times a few pages of
   ``query_iterator`` (how a build read the collection before: each page costs Milvus Lite O(N)), then flushes,
   which saves a compressed tier's codes.

The restart line fitted through the smaller sizes is the model's prediction for the last one. A compressed tier
then restarts a second time: its codes come back from their file, not from the vectors.

Each step runs in a process of its own with one numba thread (``NUMBA_NUM_THREADS=1``: the CPU seconds of a search
are its work, not a thread pool spinning). Every result is appended to ``--out`` (JSON) as it is measured, so a run
cut short keeps what it measured; ``bench/capacity.py --report`` compares them with the model's predictions in
docs/capacity.md.
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
from bench.capacity import fitted  # noqa: E402

DIMENSIONS = 384
BATCH_ROWS = 5000
FIT_QUERIES = 20
"""Searches at each smaller size (their CPU is the scan's line, measured by bench/capacity.py already)."""
COMPRESSION = {"float32": None, "binary": {"type": "binary"}, "int8": {"type": "int8"}}


def unit_vectors(rng: np.random.Generator, rows: int, dimensions: int = DIMENSIONS) -> np.ndarray:
    vectors = rng.standard_normal((rows, dimensions), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def collection_name(tier: str) -> str:
    return f"check_{tier}"


def load(store_path: Path, tier: str, rows: int, seed: int = 0) -> dict:
    """The collection of ``tier`` grown to ``rows`` vectors (created first if missing, through the store layer):
    rows ``r{count}`` … ``r{rows - 1}``, vectors seeded by where they start, inserted by pymilvus (the store's upsert
    loaded 337 rows/s here, 1M rows in most of an hour; what is checked is the restart, not the load)."""
    from rayprism.platform.config import DENSE_FIELD, CollectionConfig
    from rayprism.platform.store.milvus import MilvusStore

    store = MilvusStore(str(store_path), cache_max_rows=0)
    name = collection_name(tier)
    store.ensure(CollectionConfig(name=name, bm25=False, compression=COMPRESSION[tier]), DIMENSIONS)
    first = store.count(name)
    rng = np.random.default_rng([seed, first])
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(first, rows, BATCH_ROWS):
        vectors = unit_vectors(rng, min(BATCH_ROWS, rows - start))
        store._client.insert(name, [{"id": f"r{start + i}", DENSE_FIELD: vector, "text": ""}
                                    for i, vector in enumerate(vectors)])
    store.flush(name)
    seconds = time.perf_counter() - started
    count = store.count(name)
    store.close()
    return {"rows": rows - first, "count": count, "load_s": seconds, "load_rows_per_s": (rows - first) / seconds,
            "load_cpu_s": time.process_time() - cpu}


def restart(store_path: Path, tier: str, queries: int, seed: int = 1) -> dict:
    """In this (fresh) process: the mirror built from the store, its RSS growth, then searches (see the module)."""
    import psutil

    from rayprism.platform.store.milvus import MilvusStore, SearchQuery

    process = psutil.Process()
    rss_before = process.memory_info().rss
    started, cpu_started = time.perf_counter(), process.cpu_times()
    store = MilvusStore(str(store_path), cache_max_rows=10_000_000)
    name = collection_name(tier)
    store._client.load_collection(name)  # what a build does first: Milvus Lite (in this process) loads its rows
    store.count(name)
    opened_s = time.perf_counter() - started
    rss_opened = process.memory_info().rss
    mirror = store.mirrors.await_mirror(name, timeout_s=3600)
    restart_s = time.perf_counter() - started
    cpu_ended = process.cpu_times()
    restart_cpu_s = cpu_ended.user + cpu_ended.system - cpu_started.user - cpu_started.system
    rss_after = process.memory_info().rss
    assert mirror is not None, f"no mirror of {name} was built"
    rows = len(mirror)
    query_vectors = unit_vectors(np.random.default_rng(seed), queries + 5)
    for vector in query_vectors[:5]:  # kernels compiled and the fetch path warmed
        store.search(name, SearchQuery(mode="dense", k=10, dense_vector=vector, output_fields=[]))
    walls, cpu = [], time.process_time()
    for vector in query_vectors[5:]:
        began = time.perf_counter()
        hits = store.search(name, SearchQuery(mode="dense", k=10, dense_vector=vector, output_fields=[]))
        walls.append(time.perf_counter() - began)
        assert len(hits) == 10
    cpu_per_search = (time.process_time() - cpu) / queries
    iterator_pages = iterator_page_seconds(store, name)
    store.flush(name)  # a compressed tier's codes saved, for the next restart
    memory = store.memory(name)
    store.close()
    return {"rows": rows, "restart_s": restart_s, "restart_cpu_s": restart_cpu_s, "open_s": opened_s, "mirror_build_s": restart_s - opened_s,
            "lite_rss_bytes": rss_opened - rss_before, "rss_delta_bytes": rss_after - rss_opened,
            "codes_read_back": mirror.codes_read_back, "bytes_per_document_reported": memory["dense"]["bytes_per_document"],
            "search_p50_ms": 1000 * float(np.percentile(walls, 50)),
            "search_p99_ms": 1000 * float(np.percentile(walls, 99)), "search_cpu_s": cpu_per_search,
            "queries": queries, **iterator_pages}


def iterator_page_seconds(store, name: str, pages: int = 3) -> dict:
    """Wall and CPU seconds per page of ``query_iterator`` (4,096 rows, id and vector): how mirrors were read before
    rayprism.platform.store.mirror_loading, every page costing Milvus Lite (in this process) O(N)."""
    from rayprism.platform.config import DENSE_FIELD

    iterator = store._client.query_iterator(name, batch_size=4096, output_fields=[DENSE_FIELD])
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(pages):
            iterator.next()
        return {"iterator_page_s": (time.perf_counter() - started) / pages,
                "iterator_page_cpu_s": (time.process_time() - cpu) / pages}
    finally:
        iterator.close()


def drop(store_path: Path, tier: str) -> dict:
    from rayprism.platform.store.milvus import MilvusStore

    store = MilvusStore(str(store_path))  # the next tier's rows in place of these: the disk stays small
    if store.exists(collection_name(tier)):
        store.drop(collection_name(tier))
    store.close()
    return {}


STEPS = {"load": lambda args: load(args.store, args.step[1], args.rows),
         "restart": lambda args: restart(args.store, args.step[1], args.queries),
         "drop": lambda args: drop(args.store, args.step[1])}


def in_fresh_process(step: str, store_path: Path, tier: str, args) -> dict:
    """A Lite file stays locked by the process that opened it until that process exits: each step runs in its own."""
    command = [sys.executable, __file__, "--step", step, tier, "--store", str(store_path), "--queries",
               str(args.queries), "--rows", str(args.rows)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1"}  # CPU per search without spinning threads
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{step} of {tier} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def record(out: Path, key: str, value: dict) -> None:
    results = json.loads(out.read_text()) if out.exists() else {}
    results[key] = value
    out.write_text(json.dumps(results, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tiers", default="float32,binary,int8")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--fit-rows", type=lambda text: [int(size) for size in text.split(",")],
                        default=[100_000, 300_000], help="smaller sizes the collection grows through first, each "
                        "restarted: the restart line fitted through them predicts the one at --rows")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "capacity-check.json")
    parser.add_argument("--store", type=Path, help="the Lite file (default: a temporary directory's)")
    parser.add_argument("--step", nargs=2, metavar=("STEP", "TIER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(STEPS[args.step[0]](args)))
        return

    with tempfile.TemporaryDirectory(dir=args.store.parent if args.store else None) as directory:
        store_path = args.store or Path(directory) / "check.db"
        record(args.out, "run", {"rows": args.rows, "started": time.strftime("%Y-%m-%d %H:%M"),
                                 "load_average": os.getloadavg()})
        for tier in args.tiers.split(","):
            in_fresh_process("drop", store_path, tier, args)
            points = []
            for rows in [*(size for size in args.fit_rows if size < args.rows), args.rows]:
                step_args = argparse.Namespace(**{**vars(args), "rows": rows,
                                                  "queries": args.queries if rows == args.rows else FIT_QUERIES})
                loaded = in_fresh_process("load", store_path, tier, step_args)
                print(f"{tier}: loaded {loaded}", flush=True)
                restarted = in_fresh_process("restart", store_path, tier, step_args)
                print(f"{tier}: restart {restarted}", flush=True)
                points.append({"load": loaded, "restart": restarted})
            result = {**points[-1], "restart_points": [point["restart"] for point in points[:-1]]}
            if len(points) > 2:
                result["restart_fit"] = {key: fitted(result["restart_points"], key)
                                         for key in ("restart_s", "restart_cpu_s", "mirror_build_s")}
            if COMPRESSION[tier] is not None:
                result["restart_from_codes"] = in_fresh_process("restart", store_path, tier, args)
                print(f"{tier}: restart from codes {result['restart_from_codes']}", flush=True)
            result["load_average"] = os.getloadavg()
            record(args.out, tier, result)
            in_fresh_process("drop", store_path, tier, args)


if __name__ == "__main__":
    main()
