"""One key's flood against another key's latency: per-key quotas keep a throttled key from starving the rest.

    python bench/quotas.py [--duration-s 15] [--quota 10] [--calm-rate 10] [--port 8411]

Starts ``rayprism serve`` (the default model, MiniLM, one replica) with two keys: ``calm`` (no quota) and
``flood`` (``rate: {requests_per_s: QUOTA}``). ``wrk`` sends one-sentence ``/v1/embeddings`` requests, each
connection pacing itself with wrk's ``delay()``:

1. ``calm`` alone at about ``--calm-rate`` requests/s: its p99;
2. ``calm`` again, at the same time as ``flood`` at 5× its quota: calm's p99 under the flood, and the
   statuses flood got (counted by a wrk Lua ``response()`` hook: only 200 and 429 may appear).

Prints both p99s and their ratio (the issue asks for ≤ 1.5), flood's statuses and what /metrics counted.
Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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
    parser.add_argument("--duration-s", type=int, default=15)
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
            alone = run_wrk(url, script, CALM, args.calm_rate, args.duration_s)
            flooded: dict = {}
            flooding = threading.Thread(target=lambda: flooded.update(
                run_wrk(url, script, FLOOD, FLOOD_FACTOR * args.quota, args.duration_s)))
            flooding.start()
            together = run_wrk(url, script, CALM, args.calm_rate, args.duration_s)
            flooding.join()
            with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
                metrics = response.read().decode()
        finally:
            stop(process)
    throttled = re.search(r'^rayprism_throttled_requests_total\{key="flood",limit="requests"\} (\S+)$', metrics, re.M)
    print(f"calm alone:        {alone['requests_per_s']:.1f} req/s, p50 {alone['p50_ms']:.1f} ms, "
          f"p99 {alone['p99_ms']:.1f} ms, statuses {alone['statuses']}")
    print(f"calm under flood:  {together['requests_per_s']:.1f} req/s, p50 {together['p50_ms']:.1f} ms, "
          f"p99 {together['p99_ms']:.1f} ms, statuses {together['statuses']}")
    print(f"flood (quota {args.quota}/s, offered {FLOOD_FACTOR}×): {flooded['requests_per_s']:.1f} req/s answered, "
          f"statuses {flooded['statuses']}; /metrics throttled {throttled.group(1) if throttled else 0}")
    ratio = together["p99_ms"] / alone["p99_ms"]
    print(f"calm p99 under flood / alone: {ratio:.2f} (≤ 1.5 asked)")
    only_200_429 = set(flooded["statuses"]) <= {200, 429}
    print(f"flood got only 200 and 429: {only_200_429}")
    sys.exit(0 if only_200_429 and set(alone["statuses"]) == set(together["statuses"]) == {200} else 1)


if __name__ == "__main__":
    main()
