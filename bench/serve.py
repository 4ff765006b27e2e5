"""Served /v1/embeddings against the bare in-process encoder, measured in one run.

    python bench/serve.py [--config configs/serve.yaml] [--duration-s 20]

1. bare: ``SentenceTransformer.encode`` on the same sentences, batches of 32,
   in this process (before and after the service runs; the mean is the baseline);
2. served: ``rayprism serve`` in its own process tree, loaded by ``wrk`` (a C load
   generator, one thread) in another, for (a) one sentence per request at 32
   connections and (b) 32 sentences per request at 8 connections.

Prints throughput, p50/p99 latency and the served/bare ratio. Needs ``wrk``
(Debian: ``apt-get install wrk``). Sentences are the Debian dev queries from
../shared/data when present, else generated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUERIES = REPO.parent / "shared" / "data" / "debian" / "queries-dev-53k.jsonl"
SCENARIOS = [  # (name, sentences per request, connections)
    ("1 sentence/request, 32 connections", 1, 32),
    ("32 sentences/request, 8 connections", 32, 8),
]

WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def sentences(n: int) -> list[str]:
    if QUERIES.exists():
        with QUERIES.open() as lines:
            found = [json.loads(line)["query"] for line in lines]
        return (found * (n // len(found) + 1))[:n]
    words = "ray serve embeds vectors quickly for search over debian package text descriptions".split()
    return [" ".join(words[(i + j) % len(words)] for j in range(6 + i % 9)) + f" {i}" for i in range(n)]


def bare_sentences_per_s(texts: list[str], repeats: int = 3) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import DEFAULT_MODEL_SOURCE
    from rayprism.platform.models.source import resolve_source

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(resolve_source(DEFAULT_MODEL_SOURCE), device="cpu")
    model.encode(texts[:64], batch_size=32)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        model.encode(texts, batch_size=32)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def start_service(config: str, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rayprism.cli", "serve", config, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise SystemExit("the service exited before it was ready")
        if "rayprism is serving at" in line:
            return process
    process.kill()
    raise SystemExit("the service did not become ready in 600 s")


def stop_service(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()


def run_wrk(url: str, bodies_path: Path, script_path: Path, connections: int, duration_s: int) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script_path), url]
    output = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "BODIES": str(bodies_path)}, check=True
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses:\n{output}")

    def latency_ms(percent: str) -> float:
        value, unit = re.search(rf"\s{percent}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "serve.yaml"))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--duration-s", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed as the load generator: apt-get install wrk")

    texts = sentences(4096)
    bare_before = bare_sentences_per_s(texts)
    print(f"bare SentenceTransformer.encode (before): {bare_before:.0f} sentences/s", flush=True)

    work = Path(tempfile.mkdtemp(prefix="rayprism-bench-"))
    (work / "wrk.lua").write_text(WRK_SCRIPT)
    url = f"http://127.0.0.1:{args.port}/v1/embeddings"
    served = {}
    service = start_service(args.config, args.port)
    try:
        for name, per_request, connections in SCENARIOS:
            bodies = work / f"bodies-{per_request}.jsonl"
            with bodies.open("w") as out:
                for start in range(0, len(texts) - per_request + 1, per_request):
                    chunk = texts[start : start + per_request]
                    out.write(json.dumps({"model": "minilm", "input": chunk, "encoding_format": "base64"}) + "\n")
            run_wrk(url, bodies, work / "wrk.lua", connections, 5)  # warm-up
            result = run_wrk(url, bodies, work / "wrk.lua", connections, args.duration_s)
            result["sentences_per_s"] = result["requests_per_s"] * per_request
            served[name] = result
            print(f"served, {name}: {result}", flush=True)
    finally:
        stop_service(service)

    bare_after = bare_sentences_per_s(texts)
    bare = (bare_before + bare_after) / 2
    print(f"bare SentenceTransformer.encode (after): {bare_after:.0f} sentences/s\n")
    print("| setup | requests/s | sentences/s | p50 ms | p99 ms | served / bare |")
    print("|---|---|---|---|---|---|")
    print(f"| bare `SentenceTransformer.encode`, batches of 32 (mean of before/after) | — | {bare:.0f} | — | — | 1.00 |")
    for name, result in served.items():
        print(
            f"| rayprism serve, {name} | {result['requests_per_s']:.0f} | {result['sentences_per_s']:.0f} "
            f"| {result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {result['sentences_per_s'] / bare:.2f} |"
        )


if __name__ == "__main__":
    main()
