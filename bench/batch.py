"""Batch embedding: a plain Python process against `rayprism embed`, measured in one run.

    python bench/batch.py [--corpus 10k 53k] [--bare 10k] [--actors 1 --threads 2]
    python bench/batch.py --into-service [--corpus 10k]

For each corpus:
1. bare: a fresh Python process loads all-MiniLM-L6-v2 with sentence-transformers and
   encodes every document (``encode(batch_size=32)``, which sorts the whole list by length);
2. job: ``rayprism embed`` on the same documents in a fresh process that starts its own
   local Ray, writing float32 vectors to parquet.

Both are timed end to end (process start to exit: model load and Ray start included);
the job's peak memory is the largest sum of RSS over its whole process tree, sampled
every 0.5 s.

With ``--into-service``: a running ``rayprism serve`` (default config, its own store) takes the
corpus twice, one way after the other in the same run: ``rayprism ingest`` (the service embeds)
into one collection, and ``rayprism embed`` with ``output.service_url`` (a Ray Data job embeds,
the service only stores the vectors) into another; both timed end to end, then both collections
are searched through the service to show they answer alike. Needs ../shared/data/debian/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from services import REPO, rayprism_service, start, stop

DATA = REPO.parent / "shared" / "data" / "debian"

BARE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer
    from rayprism.platform.config import DEFAULT_MODEL_SOURCE
    from rayprism.platform.models.source import resolve_source
    torch.set_num_threads({threads})
    texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
    model = SentenceTransformer(resolve_source(DEFAULT_MODEL_SOURCE), device="cpu")
    loaded = time.perf_counter()
    model.encode(texts, batch_size=32)
    done = time.perf_counter()
    print(json.dumps({{"docs": len(texts), "total_s": done - started, "encode_s": done - loaded}}))
    """
)


def tree_rss_bytes(root: int) -> dict[str, int]:
    """RSS of a process and all its descendants (Ray's processes are children of the driver),
    grouped: the driver, Ray worker processes (the encoder actors), and Ray's own services."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
            names[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[pid] = int(line.split()[1]) * 1024
    groups = {"driver": rss.get(root, 0), "workers": 0, "ray services": 0}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        groups["workers" if names.get(pid, "").startswith("ray::") else "ray services"] += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    groups["total"] = sum(groups.values())
    return groups


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, dict[str, int], str]:
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        peak: dict[str, int] = {}
        while process.poll() is None:
            for group, value in tree_rss_bytes(process.pid).items():
                peak[group] = max(peak.get(group, 0), value)
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        log.seek(0)
        text = log.read()
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{text[-3000:]}")
    return elapsed, peak, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", choices=["10k", "53k"], default=["10k"])
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bare", nargs="*", choices=["10k", "53k"], default=["10k"],
                        help="corpora also encoded by the plain baseline (default: 10k; the job's memory is what 53k is for)")
    parser.add_argument("--into-service", action="store_true",
                        help="compare `rayprism ingest` with `rayprism embed` into a running service")
    parser.add_argument("--port", type=int, default=8125, help="the service's port (--into-service)")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the Debian retrieval set in {DATA}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    if args.into_service:
        into_service(args.corpus[0], args.port, env)
        return
    rows = []
    for corpus in args.corpus:
        source = DATA / f"corpus-{corpus}.jsonl"
        work = Path(tempfile.mkdtemp(prefix=f"rayprism-batch-{corpus}-"))
        bare = None
        if corpus in args.bare:
            script = work / "bare.py"
            script.write_text(BARE_SCRIPT.format(threads=args.threads))
            seconds, bare_peak, output = run_measured([sys.executable, str(script), str(source)], env)
            bare = json.loads(output.strip().splitlines()[-1])
            bare["peak"] = bare_peak
            print(f"bare {corpus}: {bare['docs'] / bare['total_s']:.1f} docs/s end to end "
                  f"({bare['docs'] / bare['encode_s']:.1f} encoding only), peak RSS {gib(bare_peak['total'])} GiB",
                  flush=True)
        job = {
            "input": {"path": str(source)},
            "model": {"name": "minilm"},
            "compute": {"min_actors": args.actors, "max_actors": args.actors,
                        "num_cpus": max(1, (os.cpu_count() or 1) // args.actors), "torch_threads": args.threads,
                        "batch_size": 32, "rows_per_part": 1024},
            "codecs": ["float32"],
            "output": {"parquet": str(work / "out")},
        }
        job_file = work / "job.yaml"
        job_file.write_text(json.dumps(job))
        seconds, peak, output = run_measured([sys.executable, "-m", "rayprism.cli", "embed", str(job_file)], env)
        summary = next(line for line in output.splitlines() if line.startswith("embedded "))
        docs = int(summary.split()[1])
        print(f"job {corpus}: {docs / seconds:.1f} docs/s end to end, peak RSS {peak}; {summary}", flush=True)
        rows.append((corpus, bare, docs, seconds, peak))

    print(f"\n{args.actors} actor(s) x {args.threads} torch threads\n")
    print("| corpus | bare docs/s | job docs/s | job / bare | job peak RSS GiB: total (driver / encoder workers / Ray services) |")
    print("|---|---|---|---|---|")
    for corpus, bare, docs, seconds, peak in rows:
        bare_rate = bare["docs"] / bare["total_s"] if bare else None
        ratio = f"{docs / seconds / bare_rate:.2f}" if bare else "—"
        shown = f"{bare_rate:.1f}" if bare else "—"
        split = " / ".join(gib(peak[group]) for group in ("driver", "workers", "ray services"))
        print(f"| {corpus} | {shown} | {docs / seconds:.1f} | {ratio} | {gib(peak['total'])} ({split}) |")


FIELDS = {"package": "varchar", "section": "varchar", "installed_size": "int64"}


def into_service(corpus: str, port: int, env: dict) -> None:
    from rayprism.client import Client

    source = DATA / f"corpus-{corpus}.jsonl"
    queries = [json.loads(line) for line in (DATA / f"queries-dev-{corpus}.jsonl").open()][:200]
    work = Path(tempfile.mkdtemp(prefix=f"rayprism-batch-service-{corpus}-"))
    config = work / "serve.yaml"
    config.write_text(json.dumps({"store": {"uri": str(work / "store.db")}}))
    service = rayprism_service("rayprism", config, port)
    process = start(service, work / "serve.log")
    url = service.url("")
    try:
        with Client(url) as client:
            client.request("POST", "/v1/collections", {"name": "by_ingest", "model": "minilm", "fields": FIELDS})
        cli = [sys.executable, "-m", "rayprism.cli"]
        ingest_s, _, _ = run_measured([*cli, "ingest", "by_ingest", str(source), "--url", url], env)
        job = {
            "input": {"path": str(source)},
            "model": {"name": "minilm"},
            "compute": {"num_cpus": os.cpu_count() or 1, "batch_size": 32, "rows_per_part": 1024},
            "output": {"collection": {"name": "by_job", "model": "minilm", "fields": FIELDS}, "service_url": url},
        }
        job_file = work / "job.yaml"
        job_file.write_text(json.dumps(job))
        job_s, _, output = run_measured([*cli, "embed", str(job_file)], env)
        docs = sum(1 for line in source.open() if line.strip())
        with Client(url) as client:
            counts = {name: client.collection(name)["count"] for name in ("by_ingest", "by_job")}
            mrr = {name: mean_reciprocal_rank(client, name, queries) for name in counts}
    finally:
        stop(process)
    print(f"\n{docs} documents of corpus-{corpus} into one running service; MRR@10 on {len(queries)} dev queries\n")
    print("| path | seconds | docs/s | / ingest | documents stored | hybrid MRR@10 |")
    print("|---|---|---|---|---|---|")
    for label, name, seconds in (("`rayprism ingest` (the service embeds)", "by_ingest", ingest_s),
                                 ("`rayprism embed` → service_url (Ray Data embeds)", "by_job", job_s)):
        print(f"| {label} | {seconds:.1f} | {docs / seconds:.1f} | {ingest_s / seconds:.2f} | {counts[name]} | "
              f"{mrr[name]:.3f} |")


def mean_reciprocal_rank(client, collection: str, queries: list[dict]) -> float:
    total = 0.0
    for query in queries:
        ids = [hit["id"] for hit in client.search(collection, query["query"], k=10)["results"]]
        target = str(query["doc_id"])
        total += 1 / (ids.index(target) + 1) if target in ids else 0.0
    return total / len(queries)


def gib(value: int) -> str:
    return f"{value / 2**30:.2f}"


if __name__ == "__main__":
    main()
