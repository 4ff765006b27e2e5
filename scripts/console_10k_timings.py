"""The console's routes on the Debian 10k collection, timed through HTTP: a page of documents, the map.

    python scripts/console_10k_timings.py      # needs ../shared/data/debian and bench/backup.py's vector cache

Starts `rayprism serve` (MiniLM, a fresh Lite file), upserts corpus-10k with the vectors bench/backup.py cached
(nothing embedded), waits for the mirror, then times each route a few times (median and worst).
"""
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from debian import DATA, FIELDS, read_jsonl
from services import rayprism_service, start, stop

work = Path(tempfile.mkdtemp(prefix="rayprism-console10k-"))
(work / "serve.yaml").write_text(f"models:\n  - {{name: minilm}}\nstore: {{uri: {work}/store.db}}\n")
corpus = read_jsonl(DATA / "corpus-10k.jsonl")
vectors = np.load(Path.home() / ".cache/rayprism-bench/backup/corpus-10k-minilm.npy")
process = start(rayprism_service("console10k", work / "serve.yaml", 8731), work / "serve.log")
url = "http://127.0.0.1:8731"
try:
    with httpx.Client(base_url=url, timeout=600) as http:
        assert http.post("/v1/collections", json={"name": "debian", "model": "minilm", "fields": FIELDS}).status_code == 201
        rows = [{**row, "id": str(row["id"]), "vector": base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()}
                for row, v in zip(corpus, vectors)]
        for first in range(0, len(rows), 500):
            http.post("/v1/collections/debian/documents", json={"documents": rows[first:first + 500]}).raise_for_status()
        for _ in range(60):
            if http.get("/v1/collections/debian").json().get("mirror"):
                break
            http.post("/v1/collections/debian/search", json={"query": "warm", "k": 1}); time.sleep(1)
        def timed(path, params, n):
            seconds = []
            for _ in range(n):
                started = time.perf_counter(); r = http.get(path, params=params); r.raise_for_status()
                seconds.append(time.perf_counter() - started)
            return statistics.median(seconds) * 1e3, max(seconds) * 1e3, len(r.content)
        for label, path, params, n in [
            ("documents page (20, offset 5000)", "/v1/collections/debian/documents", {"limit": 20, "offset": 5000}, 10),
            ("documents page (20, offset 0)", "/v1/collections/debian/documents", {"limit": 20, "offset": 0}, 10),
            ("map, 2,000 sampled, by section", "/v1/collections/debian/map", {"sample": 2000, "color_by": "section"}, 5),
            ("map + query with its hits", "/v1/collections/debian/map", {"sample": 2000, "color_by": "section", "query": "tiling window manager"}, 5),
            ("collection description", "/v1/collections/debian", {}, 10)]:
            median, worst, size = timed(path, params, n)
            print(f"| {label} | {median:.0f} | {worst:.0f} | {size / 1024:.0f} KiB |", flush=True)
finally:
    stop(process)
