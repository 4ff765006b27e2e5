"""`rayprism tune` on the Debian set: tuned settings against the defaults on dev queries the search never saw.

    python bench/tune.py [--trials 24] [--holdout 0.3] [--concurrency 4] [--seeds 0] [--store DIR]

In one run:
1. starts ``rayprism serve`` as configs/serve.yaml does on this machine (two replicas of one thread, MiniLM) with a
   ``debian`` collection in a Milvus Lite file (``--store``: a folder whose ``bench.db`` is kept and reused, so a
   second run skips the ingest);
2. ingests corpus-10k through the SDK unless the collection already holds it;
3. for each ``--seeds`` value: runs ``rayprism tune debian --queries <1,000 dev queries> --holdout ...`` as a user
   runs it (its own local Ray, trials searching the service over HTTP), timed from the command's start to its end;
   then scores, in this process, the settings it chose and a plain search (the defaults: weighted 0.5/0.5 fusion,
   50 candidates) on the held-out queries, the two interleaved query by query, one search at a time;
4. prints per seed the held-out MRR@10, R@1, R@10 and p50/p95 of both, the difference, and the command's wall time
   (it must stay under 15 minutes here), and keeps each run's report and plot (``--out``).

The collection's defaults are left as they were (the command runs without ``--apply``). Needs ../shared/data/debian/.
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

import httpx
from debian import DATA, FIELDS, percentile_ms, read_jsonl, scores
from services import REPO, rayprism_service, start, stop

sys.path.insert(0, str(REPO))
from rayprism.jobs.tune import (  # noqa: E402  (the command's defaults, and its own split to score on)
    DEFAULT_CONCURRENCY,
    DEFAULT_HOLDOUT,
    DEFAULT_TRIALS,
    queries_of,
    split_queries,
)

SERVE = {  # configs/serve.yaml's serving layout on this 2-core machine; the Debian collection instead of docs
    "server": {"audit_log": None},
    "deployment": {"num_cpus": 0.5, "replicas": {"min": 2, "max": 2}},
    "models": [{"name": "minilm", "torch_threads": 1}],
    "collections": [{"name": "debian", "fields": FIELDS}],
}


def held_out_scores(url: str, settings: dict | None, queries: list[dict]) -> tuple[list[list[str]], list[float]]:
    """Each query searched with ``settings`` given explicitly (None: a plain search), one at a time."""
    ranked, latencies = [], []
    with httpx.Client(base_url=url, timeout=120) as http:
        for query in queries:
            body = {"query": query["query"], "k": 10}
            if settings is not None:
                body.update(mode=settings.get("mode"), fusion=settings.get("fusion", {"type": "weighted"}),
                            candidates=settings.get("candidates"), rerank=settings.get("rerank"))
            started = time.perf_counter()
            answer = http.post("/v1/collections/debian/search", json=body)
            latencies.append(time.perf_counter() - started)
            answer.raise_for_status()
            ranked.append([hit["id"] for hit in answer.json()["results"]])
    return ranked, latencies


def interleaved(url: str, settings: dict, queries: list[dict]) -> dict[str, tuple]:
    """The chosen settings and a plain search on ``queries``, query by query in turn: (ranked, latencies) each."""
    runs = {"tuned": ([], []), "defaults": ([], [])}
    for query in queries:
        for name, given in (("tuned", settings), ("defaults", None)):
            ranked, latencies = held_out_scores(url, given, [query])
            runs[name][0].extend(ranked)
            runs[name][1].extend(latencies)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    parser.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--seeds", default="0", help="comma-separated: one tune run (query split, sampling) per seed")
    parser.add_argument("--port", type=int, default=8130)
    parser.add_argument("--store", type=Path, default=None, help="keep the store here and reuse it (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rayprism-bench-tune",
                        help="where each run's report and plot go")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the Debian retrieval set in {DATA}")
    work = Path(tempfile.mkdtemp(prefix="rayprism-tune-bench-"))
    store = args.store or work
    store.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    config = work / "serve.json"
    config.write_text(json.dumps({**SERVE, "store": {"uri": str(store / "bench.db")}}))
    corpus = read_jsonl(DATA / "corpus-10k.jsonl")
    dev = read_jsonl(DATA / "queries-dev-10k.jsonl")
    queries_file = work / "queries.jsonl"
    queries_file.write_text("".join(json.dumps({"query": q["query"], "relevant": [str(q["doc_id"])]}) + "\n"
                                    for q in dev))

    from rayprism.client import Client, SourceDocument

    service = rayprism_service("rayprism", config, args.port)
    url = service.url("")
    process = start(service, work / "serve.log")
    rows = []
    try:
        with Client(url) as client:
            if client.collection("debian")["count"] < len(corpus):
                documents = [SourceDocument(str(d["id"]), {k: d[k] for k in ("id", "text", *FIELDS)}) for d in corpus]
                ingest = client.ingest("debian", documents, batch_size=64)
                print(f"ingested {ingest.upserted} documents: {ingest.docs_per_s:.1f} docs/s", flush=True)
                time.sleep(3)  # the store seals fresh rows once writes pause
            client.search("debian", "warm up", k=1)
        for seed in [int(seed) for seed in args.seeds.split(",")]:
            report, plot = args.out / f"report-{seed}.json", args.out / f"front-{seed}.png"
            command = [sys.executable, "-m", "rayprism.cli", "tune", "debian", "--queries", str(queries_file),
                       "--url", url, "--trials", str(args.trials), "--holdout", str(args.holdout), "--concurrency",
                       str(args.concurrency), "--seed", str(seed), "--report", str(report), "--plot", str(plot)]
            print(f"\n$ rayprism tune debian --queries dev.jsonl --trials {args.trials} --holdout {args.holdout} "
                  f"--concurrency {args.concurrency} --seed {seed} --plot {plot.name}", flush=True)
            started = time.perf_counter()
            finished = subprocess.run(command, cwd=REPO)
            wall_s = time.perf_counter() - started
            if finished.returncode != 0:
                raise SystemExit(f"rayprism tune exited with {finished.returncode}")
            result = json.loads(report.read_text())
            split = split_queries(queries_of({"query": q["query"], "relevant": [q["doc_id"]]} for q in dev),
                                  args.holdout, seed)[1]
            held_out = [{"query": q.text, "target": next(iter(q.relevant))} for q in split]
            runs = interleaved(url, result["chosen"]["settings"], held_out)
            targets = [q["target"] for q in held_out]
            measured = {name: (*scores(ranked, targets), percentile_ms(latencies, 50), percentile_ms(latencies, 95))
                        for name, (ranked, latencies) in runs.items()}
            complete = sum(trial["complete"] for trial in result["trials"])
            rows.append((seed, result, measured, wall_s, complete))
            load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
            print(f"seed {seed}: {wall_s:.0f} s (load average {load}); chosen {result['chosen']['label']}; held-out "
                  f"MRR@10 tuned {measured['tuned'][0]:.3f} vs defaults {measured['defaults'][0]:.3f}", flush=True)
    finally:
        stop(process)

    print(f"\ncorpus-10k, {len(dev)} dev queries: {len(dev) - round(len(dev) * args.holdout)} to tune on, "
          f"{round(len(dev) * args.holdout)} held out; {args.trials} trials, {args.concurrency} at a time\n")
    print("| seed | settings | held-out MRR@10 | R@1 | R@10 | p50 ms | p95 ms | tune wall time | trials on every query |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed, result, measured, wall_s, complete in rows:
        for name, shown in (("defaults", "defaults (" + result["current_label"] + ")"),
                            ("tuned", "**tuned**: " + result["chosen"]["label"])):
            mrr, r1, r10, p50, p95 = measured[name]
            timing = f"{wall_s / 60:.1f} min" if name == "tuned" else ""
            trials = f"{complete} of {len(result['trials'])}" if name == "tuned" else ""
            print(f"| {seed} | {shown} | {mrr:.3f} | {r1:.3f} | {r10:.3f} | {p50:.1f} | {p95:.1f} | {timing} | {trials} |")
    print("\n| seed | held-out MRR@10 tuned − defaults | the command's own figures (tuned / current) |")
    print("|---|---|---|")
    for seed, result, measured, _, _ in rows:
        own = result["held_out"]
        print(f"| {seed} | {measured['tuned'][0] - measured['defaults'][0]:+.3f} | "
              f"{own['chosen']['mrr_at_10']:.3f} / {own['current']['mrr_at_10']:.3f} |")


if __name__ == "__main__":
    main()
