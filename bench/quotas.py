"""One key's flood against another key's latency: per-key quotas keep a throttled key from starving the rest.

    python bench/quotas.py [--duration-s 30] [--rounds 4] [--quota 10] [--calm-rate 10] [--port 8411]

Starts ``rayprism serve`` (the default model, MiniLM, one replica) with two keys: ``calm`` (no quota) and
``flood`` (``rate: {requests_per_s: QUOTA}``). ``wrk`` sends one-sentence ``/v1/embeddings`` requests, each
connection pacing itself with wrk's ``delay()``:

1. ``calm`` alone at about ``--calm-rate`` requests/s: its p99;
2. ``calm`` again, at the same time as ``flood`` at 5× its quota: calm's p99 under the flood, and the
   statuses flood got (counted by a wrk Lua ``response()`` hook: only 200 and 429 may appear).

Both phases run ``--rounds`` times, in turns (alone then flooded, then flooded then alone, ...), so that a
shared machine's load drifting over the minutes weighs on both alike. Prints each round's p99s and ratio,
their median (the issue asks for ≤ 1.5), flood's statuses and what /metrics counted.
Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from services import rayprism_service, start, stop

CALM = "sk-bench-calm-0123456789abcdef"
FLOOD = "sk-bench-flood-0123456789abcdef"
CONNECTIONS = 4
FLOOD_FACTOR = 5

WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
wrk.body = '{"model": "minilm", "input": "how do I read a package changelog"}'
local pause_ms = tonumber(os.getenv("DELAY_MS"))
function delay() return pause_ms end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do io.write(string.format("status %d %d\\n", status, count)) end
  end
end
"""


def serve_config(folder: Path, quota: float) -> Path:
    config = folder / "serve.yaml"
    config.write_text(f"""\
server:
  audit_log: {folder / "audit.jsonl"}
  api_keys:
    - {{name: calm, key: "{CALM}", scopes: ["embed"]}}
    - {{name: flood, key: "{FLOOD}", scopes: ["embed"], rate: {{requests_per_s: {quota}, burst_s: 1}}}}
models:
  - {{name: minilm, torch_threads: 1}}
store: {{uri: {folder / "store.db"}}}
""")
    return config


def run_wrk(url: str, script: Path, key: str, rate_per_s: float, duration_s: int) -> dict:
    """``CONNECTIONS`` connections, each pausing so that together they offer about ``rate_per_s``."""
    delay_ms = max(0, round(CONNECTIONS * 1000 / rate_per_s))
    output = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--timeout", "30s", "--latency", "-s", str(script),
         f"{url}/v1/embeddings"],
        capture_output=True, text=True, check=True, env={**os.environ, "KEY": key, "DELAY_MS": str(delay_ms)},
    ).stdout
    if re.search(r"Socket errors: .*", output):
        raise SystemExit(f"wrk: socket errors\n{output}")

    def latency_ms(percent: str) -> float:
        value, unit = re.search(rf"\s{percent}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99"),
            "statuses": {int(status): int(count) for status, count in re.findall(r"^status (\d+) (\d+)$", output, re.M)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=30, help="seconds of each phase")
    parser.add_argument("--rounds", type=int, default=4, help="alone and flooded phases, in turns")
    parser.add_argument("--quota", type=float, default=10, help="flood's requests_per_s")
    parser.add_argument("--calm-rate", type=float, default=10, help="requests/s calm offers")
    parser.add_argument("--port", type=int, default=8411)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed as the load generator: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="bench-quotas-") as folder:
        work = Path(folder)
        script = work / "pace.lua"
        script.write_text(WRK_SCRIPT)
        service = rayprism_service("rayprism", serve_config(work, args.quota), args.port)
        process = start(service, work / "serve.log")
        try:
            url = service.url("")
            run_wrk(url, script, CALM, args.calm_rate, 5)  # warm-up
            rounds = [measure_round(url, script, args, alone_first=index % 2 == 0) for index in range(args.rounds)]
            with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
                metrics = response.read().decode()
        finally:
            stop(process)
    report(rounds, metrics, args.quota)


def measure_round(url: str, script: Path, args, alone_first: bool) -> dict:
    """Calm alone and calm under the flood, in the order given."""

    def flooded_phase() -> tuple[dict, dict]:
        flooded: dict = {}
        flooding = threading.Thread(target=lambda: flooded.update(
            run_wrk(url, script, FLOOD, FLOOD_FACTOR * args.quota, args.duration_s)))
        flooding.start()
        together = run_wrk(url, script, CALM, args.calm_rate, args.duration_s)
        flooding.join()
        return together, flooded

    if alone_first:
        alone = run_wrk(url, script, CALM, args.calm_rate, args.duration_s)
        together, flooded = flooded_phase()
    else:
        together, flooded = flooded_phase()
        alone = run_wrk(url, script, CALM, args.calm_rate, args.duration_s)
    return {"alone": alone, "together": together, "flooded": flooded}


def report(rounds: list[dict], metrics: str, quota: float) -> None:
    print("| round | calm alone p50 / p99 ms | calm under flood p50 / p99 ms | p99 ratio | flood answered req/s | flood statuses |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for index, measured in enumerate(rounds, start=1):
        alone, together, flooded = measured["alone"], measured["together"], measured["flooded"]
        ratios.append(together["p99_ms"] / alone["p99_ms"])
        print(f"| {index} | {alone['p50_ms']:.1f} / {alone['p99_ms']:.1f} | {together['p50_ms']:.1f} / "
              f"{together['p99_ms']:.1f} | {ratios[-1]:.2f} | {flooded['requests_per_s']:.1f} | {flooded['statuses']} |")
    throttled = re.search(r'^rayprism_throttled_requests_total\{key="flood",limit="requests"\} (\S+)$', metrics, re.M)
    refused = sum(measured["flooded"]["statuses"].get(429, 0) for measured in rounds)
    print(f"\nflood (quota {quota}/s, offered {FLOOD_FACTOR}×): {refused} answered 429 in all; "
          f"/metrics throttled {throttled.group(1) if throttled else 0}")
    print(f"calm p99 under flood / alone, median of {len(rounds)} rounds: {statistics.median(ratios):.2f} (≤ 1.5 asked)")
    only_200_429 = all(set(measured["flooded"]["statuses"]) <= {200, 429} for measured in rounds)
    calm_all_200 = all(set(measured[phase]["statuses"]) == {200} for measured in rounds for phase in ("alone", "together"))
    print(f"flood got only 200 and 429: {only_200_429}; calm got only 200: {calm_all_200}")
    sys.exit(0 if only_200_429 and calm_all_200 else 1)


if __name__ == "__main__":
    main()
