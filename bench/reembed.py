"""A zero-downtime re-embedding of the Debian collection under load: base MiniLM to a fine-tuned model.

    python bench/reembed.py [--corpus 10k] [--model-dir models/minilm-debian] [--searchers 4]

In one run:
1. starts ``rayprism serve`` (a fresh Milvus Lite file) with two models: ``minilm``
   (all-MiniLM-L6-v2) and ``tuned`` (``--model-dir``, e.g. what ``rayprism train`` wrote);
2. ingests the corpus into ``debian_v1`` (minilm) behind the alias ``debian``, and, as the
   reference, into ``debian_scratch`` built from scratch with ``tuned``;
3. starts the load: ``--searchers`` threads, each with its own HTTP client, searching the alias
   (hybrid, dev queries in turn) without pause, and one writer that inserts, changes and deletes
   documents of its own through the alias (``--writes-per-s``);
4. after ``--before-s`` seconds posts ``POST /v1/collections/debian/reembed`` to ``tuned`` (gate: MRR@10
   on ``--gate-queries`` dev queries) and follows the job to its end; once the job's bridge is
   fitted, scores the dev queries embedded by ``tuned`` through the bridge (old index) on the side;
5. keeps the load ``--after-s`` seconds more, then stops it and checks every write: each document
   the writer left is in the new collection with its last text, each one it deleted is absent;
6. removes the writer's documents and scores the dev queries on the alias (now the new collection),
   on the scratch reference and on the old collection.

It prints searches answered and failed (must be 0), p50/p99 latency before, during and after the
job, the writes made during the job and whether all of them are in the new collection, and MRR@10
after the swap beside the scratch collection's.

Needs ../shared/data/debian/ and the fine-tuned model directory.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from debian import DATA, FIELDS, percentile_ms, read_jsonl, scores
from services import REPO, rayprism_service, start, stop

PHASES = ("before", "during", "after")
WRITER_SECTION = "bench-writes"


@dataclass
class Timeline:
    """When the job began and ended (perf_counter seconds): what phase a request belongs to."""

    job_started: float = float("inf")
    job_ended: float = float("inf")

    def phase(self, at: float) -> str:
        return "before" if at < self.job_started else "during" if at < self.job_ended else "after"


@dataclass
class Searches:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {phase: [] for phase in PHASES})
    failures: Counter = field(default_factory=Counter)
    """What failed, by status (or exception type) and phase."""
    lock: threading.Lock = field(default_factory=threading.Lock)


def searcher(url: str, queries: list[str], offset: int, timeline: Timeline, searches: Searches,
             stop_event: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        turn = offset
        while not stop_event.is_set():
            query = queries[turn % len(queries)]
            turn += 1
            started = time.perf_counter()
            try:
                response = http.post("/v1/collections/debian/search", json={"query": query, "k": 10})
                outcome = response.status_code
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            elapsed = time.perf_counter() - started
            with searches.lock:
                if outcome == 200:
                    searches.latencies[timeline.phase(started)].append(elapsed)
                else:
                    searches.failures[(str(outcome), timeline.phase(started))] += 1


@dataclass
class Writes:
    expected: dict[str, str | None] = field(default_factory=dict)
    """The writer's documents: id → its last text, or None once deleted."""
    during: int = 0
    """Writes sent after the job began and answered before it ended."""
    total: int = 0
    failed: int = 0


def writer(url: str, per_s: float, timeline: Timeline, writes: Writes, stop_event: threading.Event) -> None:
    """One write at a time through the alias: a new document, then every third turn a change of an
    earlier one and every fifth the deletion of another."""
    with httpx.Client(base_url=url, timeout=120) as http:
        turn = 0
        while not stop_event.wait(1 / per_s):
            started = time.perf_counter()
            doc_id = f"bench-w{turn}"
            requests = [("POST", {"documents": [_written(doc_id, f"package written during the move, number {turn}")]},
                         {doc_id: f"package written during the move, number {turn}"})]
            if turn % 3 == 2:
                changed = f"bench-w{turn - 1}"
                requests.append(("POST", {"documents": [_written(changed, f"changed during the move, turn {turn}")]},
                                 {changed: f"changed during the move, turn {turn}"}))
            if turn % 5 == 4:
                requests.append(("DELETE", {"ids": [f"bench-w{turn - 3}"]}, {f"bench-w{turn - 3}": None}))
            for method, body, effect in requests:
                response = http.request(method, "/v1/collections/debian/documents", json=body)
                if response.status_code != 200:
                    writes.failed += 1
                    continue
                writes.expected.update(effect)
                writes.total += 1
                if timeline.job_started <= started and time.perf_counter() < timeline.job_ended:
                    writes.during += 1
            turn += 1


def _written(doc_id: str, text: str) -> dict:
    return {"id": doc_id, "text": text, "package": doc_id, "section": WRITER_SECTION, "priority": "optional",
            "installed_size": 1}


def ingest(client, collection: str, corpus: list[dict], batch_size: int) -> float:
    from rayprism.client import SourceDocument

    documents = [SourceDocument(str(d["id"]), {k: d[k] for k in ("id", "text", *FIELDS)}) for d in corpus]
    summary = client.ingest(collection, documents, batch_size=batch_size)
    print(f"ingested {summary.upserted} docs into {collection}: {summary.docs_per_s:.1f} docs/s", flush=True)
    return summary.docs_per_s


def mrr(client, collection: str, queries: list[dict], **options) -> float:
    ranked = [[hit["id"] for hit in client.search(collection, q["query"], k=10, output_fields=[], **options)["results"]]
              for q in queries]
    return scores(ranked, [str(q["doc_id"]) for q in queries])[0]


def follow(client, job_id: str, queries: list[dict], timeline: Timeline) -> tuple[dict, dict | None]:
    """Poll the job to its end; once its bridge is fitted, score the queries through it (the new model's
    query vectors mapped into the old index) and, on the same queries, the old model's own."""
    bridged = None
    last_phase = None
    while True:
        job = client.reembed_job(job_id).model_dump(mode="json")
        if job["state"] != "running":
            timeline.job_ended = time.perf_counter()
            return job, bridged
        if job["phase"] != last_phase:
            print(f"  job {job_id}: {job['phase']} ({job['documents_done']}/{job['documents_total']})", flush=True)
            last_phase = job["phase"]
        if bridged is None and job["bridge"] is not None and job["phase"] in ("copying", "following"):
            bridged = {"tuned through the bridge": mrr(client, "debian", queries, model="tuned"),
                       "minilm (the old model itself)": mrr(client, "debian", queries),
                       "quality": job["bridge"]}
            if client.collection("debian")["name"] != job["source"]:
                bridged = None  # the swap came first: these scores would be of the new index
            continue
        time.sleep(0.5)


def check_writes(url: str, collection: str, writes: Writes) -> tuple[int, list[str]]:
    """(documents checked, problems): each of the writer's documents as the writer last left it."""
    problems = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for doc_id, text in writes.expected.items():
            response = http.get(f"/v1/collections/{collection}/documents/{doc_id}")
            if text is None and response.status_code != 404:
                problems.append(f"{doc_id}: deleted, but answers {response.status_code}")
            elif text is not None and (response.status_code != 200 or response.json().get("text") != text):
                problems.append(f"{doc_id}: expected {text!r}, got {response.status_code} {response.text[:120]}")
    return len(writes.expected), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=["10k", "53k"], default="10k")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "minilm-debian",
                        help="the model to move to (a sentence-transformers directory)")
    parser.add_argument("--port", type=int, default=8126)
    parser.add_argument("--searchers", type=int, default=4, help="search threads (each its own HTTP client)")
    parser.add_argument("--writes-per-s", type=float, default=4.0)
    parser.add_argument("--before-s", type=float, default=30.0, help="load before the job starts")
    parser.add_argument("--after-s", type=float, default=30.0, help="load after the swap")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per step of the job, and of ingest")
    parser.add_argument("--gate-queries", type=int, default=200, help="dev queries of the MRR@10 gate")
    parser.add_argument("--limit-docs", type=int, default=None,
                        help="a smoke run: the first N documents (and the dev queries whose target is among them)")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the Debian retrieval set in {DATA}")
    if not (args.model_dir / "modules.json").exists():
        raise SystemExit(f"--model-dir {args.model_dir} is not a sentence-transformers directory "
                         "(`rayprism train` writes one)")

    corpus = read_jsonl(DATA / f"corpus-{args.corpus}.jsonl")[: args.limit_docs]
    held = {str(d["id"]) for d in corpus}
    queries = [q for q in read_jsonl(DATA / f"queries-dev-{args.corpus}.jsonl") if str(q["doc_id"]) in held]
    work = Path(tempfile.mkdtemp(prefix="rayprism-reembed-"))
    threads = os.cpu_count()
    config = {
        "models": [{"name": "minilm", "torch_threads": threads},
                   {"name": "tuned", "source": str(args.model_dir.resolve()), "torch_threads": threads}],
        "store": {"uri": str(work / "bench.db")},
    }
    config_path = work / "serve.yaml"
    config_path.write_text(json.dumps(config))

    from rayprism.client import Client

    url = f"http://127.0.0.1:{args.port}"
    service = start(rayprism_service("rayprism", config_path, args.port), work / "serve.log")
    timeline, searches, writes = Timeline(), Searches(), Writes()
    stop_event = threading.Event()
    try:
        with Client(url) as client:
            for name, model in (("debian_v1", "minilm"), ("debian_scratch", "tuned")):
                client.request("POST", "/v1/collections", {"name": name, "model": model, "fields": FIELDS})
                ingest(client, name, corpus, args.batch_size)
            client.point_alias("debian", "debian_v1")
            time.sleep(3)  # the store seals fresh rows a second after the last write

            texts = [q["query"] for q in queries]
            load = [threading.Thread(target=searcher, args=(url, texts, i * 97, timeline, searches, stop_event))
                    for i in range(args.searchers)]
            load.append(threading.Thread(target=writer, args=(url, args.writes_per_s, timeline, writes, stop_event)))
            for thread in load:
                thread.start()
            time.sleep(args.before_s)

            gate = [{"query": q["query"], "relevant": [str(q["doc_id"])]} for q in queries[: args.gate_queries]]
            timeline.job_started = time.perf_counter()
            job = client.reembed("debian", "tuned", evaluation={"queries": gate},
                                 batch_size=args.batch_size).model_dump(mode="json")
            print(f"job {job['id']}: {job['source']} → {job['target']} started", flush=True)
            job, bridged = follow(client, job["id"], queries, timeline)
            job_s = timeline.job_ended - timeline.job_started
            print(f"job {job['id']}: {job['state']} in {job_s:.1f} s; the alias reaches "
                  f"{client.collection('debian')['name']}", flush=True)
            time.sleep(args.after_s)
            stop_event.set()
            for thread in load:
                thread.join()

            checked, problems = check_writes(url, job["target"], writes)
            left = [doc_id for doc_id, text in writes.expected.items() if text is not None]
            if left:
                client.request("DELETE", "/v1/collections/debian/documents", {"ids": left})
            time.sleep(3)
            quality = {
                "debian (alias, after the swap)": mrr(client, "debian", queries),
                "debian_scratch (built from scratch with tuned)": mrr(client, "debian_scratch", queries),
                "debian_v1 (the old collection, minilm)": mrr(client, job["source"], queries),
            }
            dense = {name: mrr(client, collection, queries, mode="dense")
                     for name, collection in (("alias", "debian"), ("scratch", "debian_scratch"))}
    finally:
        stop_event.set()
        stop(service)

    answered = {phase: len(searches.latencies[phase]) for phase in PHASES}
    failed = sum(searches.failures.values())
    gate = job["gate"] or {}
    gate_shown = (f"gate {gate['metric']}: old {gate['old']:.3f}, new {gate['new']:.3f}" if gate
                  else f"no gate: {job['error']}")
    print(f"\ncorpus-{args.corpus}: {len(corpus)} documents, {len(queries)} dev queries; "
          f"{args.searchers} searchers, a writer at {args.writes_per_s:g}/s; job {job['state']} in {job_s:.1f} s "
          f"({gate_shown})\n")
    print("| phase | searches answered | failed | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for phase in PHASES:
        failed_here = sum(count for (_, where), count in searches.failures.items() if where == phase)
        shown = (f"{percentile_ms(searches.latencies[phase], 50):.1f} | {percentile_ms(searches.latencies[phase], 99):.1f}"
                 if searches.latencies[phase] else "— | —")
        print(f"| {phase} the job | {answered[phase]} | {failed_here} | {shown} |")
    print(f"| all | {sum(answered.values())} | {failed} | | |")
    if searches.failures:
        print(f"failures: {dict(searches.failures)}")
    print(f"\nwrites: {writes.total} made ({writes.failed} failed), {writes.during} of them during the job; "
          f"{checked} documents checked in {job['target']}: "
          + ("all as last written" if not problems else f"{len(problems)} wrong: {problems[:5]}"))
    print("\n| collection | MRR@10 (hybrid) |")
    print("|---|---|")
    for name, value in quality.items():
        print(f"| {name} | {value:.3f} |")
    print(f"\ndense MRR@10: alias {dense['alias']:.3f}, scratch {dense['scratch']:.3f}; "
          f"alias − scratch (hybrid): {quality['debian (alias, after the swap)'] - quality['debian_scratch (built from scratch with tuned)']:+.4f}")
    if bridged is not None:
        print(f"\nduring the job, dev queries embedded by tuned searched the old index through the bridge "
              f"({bridged['quality']['method']}, fitted on {bridged['quality']['fit_rows']} documents): hybrid MRR@10 "
              f"{bridged['tuned through the bridge']:.3f}, the old model's own {bridged['minilm (the old model itself)']:.3f}; "
              f"held-out cosine to the old vectors {bridged['quality']['against_old']['mean_cosine']:.3f}")
    else:
        print("\nthe job swapped before its bridge could be scored")
    ok = failed == 0 and not problems and writes.failed == 0 and job["state"] == "done"
    print(f"\n{'OK' if ok else 'NOT OK'}: {failed} failed searches, {len(problems)} lost or wrong writes")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
