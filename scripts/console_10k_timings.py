"""The console's routes on the Debian 10k collection, timed through HTTP: pages of documents, the map.

    python scripts/console_10k_timings.py              # needs ../shared/data/debian
    python scripts/console_10k_timings.py --copies 10  # 100,000 documents: the corpus ten times (ids -1 … -9)

Starts `rayprism serve` (MiniLM, a fresh Lite file), upserts corpus-10k with its MiniLM vectors (those bench/backup.py
caches; embedded through the service and cached the first time), waits for the in-memory mirror, then times each route
a few times (median and worst). A cold map is the first after a write (one document written again before each):
its picture is no longer the one kept for the mirror's version.
"""
import argparse
import base64
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from backup import embedded
from debian import DATA, FIELDS, read_jsonl
from services import rayprism_service, start, stop

from rayprism import Client

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--copies", type=int, default=1, help="the corpus this many times (ids of copies end in -1, -2, …)")
parser.add_argument("--port", type=int, default=8731)
arguments = parser.parse_args()

work = Path(tempfile.mkdtemp(prefix="rayprism-console10k-"))
(work / "serve.yaml").write_text(f"models:\n  - {{name: minilm}}\nstore: {{uri: {work}/store.db}}\n")
corpus = read_jsonl(DATA / "corpus-10k.jsonl")
process = start(rayprism_service("console10k", work / "serve.yaml", arguments.port), work / "serve.log")
url = f"http://127.0.0.1:{arguments.port}"


def copy_of(row: dict, vector: np.ndarray, copy: int) -> dict:
    return {**row, "id": str(row["id"]) + (f"-{copy}" if copy else ""),
            "vector": base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()}


try:
    vectors = embedded(Client(url, timeout_s=600), corpus)
    with httpx.Client(base_url=url, timeout=600) as http:
        assert http.post("/v1/collections", json={"name": "debian", "model": "minilm", "fields": FIELDS}).status_code == 201
        started = time.perf_counter()
        for copy in range(arguments.copies):
            rows = [copy_of(row, vector, copy) for row, vector in zip(corpus, vectors)]
            for first in range(0, len(rows), 500):
                http.post("/v1/collections/debian/documents", json={"documents": rows[first:first + 500]}).raise_for_status()
        print(f"upserted {len(corpus) * arguments.copies} documents in {time.perf_counter() - started:.0f} s", flush=True)
        for _ in range(600):
            if http.get("/v1/collections/debian").json().get("mirror"):
                break
            http.post("/v1/collections/debian/search", json={"query": "warm", "k": 1}); time.sleep(1)
        ids = sorted(str(row["id"]) + (f"-{copy}" if copy else "") for copy in range(arguments.copies) for row in corpus)
        middle, last_page = ids[len(ids) // 2 - 1], ids[-21]
        rewrite = {"documents": [copy_of(corpus[0], vectors[0], 0)]}

        def timed(path, params, n, before=None):
            seconds = []
            for _ in range(n):
                if before:
                    before()
                started = time.perf_counter(); r = http.get(path, params=params); r.raise_for_status()
                seconds.append(time.perf_counter() - started)
            return statistics.median(seconds) * 1e3, max(seconds) * 1e3, len(r.content)

        def written_again():
            http.post("/v1/collections/debian/documents", json=rewrite).raise_for_status()

        documents, map_ = "/v1/collections/debian/documents", "/v1/collections/debian/map"
        drawn = {"sample": 2000, "color_by": "section"}
        placed = {**drawn, "query": "tiling window manager"}
        print(f"| route ({len(ids):,} documents) | median | worst | answer |\n|---|---|---|---|")
        for label, path, params, n, before in [
            ("documents page (20, first)", documents, {"limit": 20}, 10, None),
            (f"documents page (20, after the {len(ids) // 2:,}th id)", documents, {"limit": 20, "after": middle}, 10, None),
            ("documents page (20, the last)", documents, {"limit": 20, "after": last_page}, 10, None),
            (f"documents page (20, offset {len(ids) // 2:,})", documents, {"limit": 20, "offset": len(ids) // 2}, 5, None),
            ("map, 2,000 sampled, by section: cold (after a write)", map_, drawn, 5, written_again),
            ("map, 2,000 sampled, by section: warm", map_, drawn, 10, None),
            ("map + query with its hits: warm", map_, placed, 10, None),
            ("collection description", "/v1/collections/debian", {}, 10, None)]:
            median, worst, size = timed(path, params, n, before)
            print(f"| {label} | {median:.0f} | {worst:.0f} | {size / 1024:.0f} KiB |", flush=True)
finally:
    stop(process)
    shutil.rmtree(work, ignore_errors=True)
