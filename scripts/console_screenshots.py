"""Screenshots of the console for docs/console/ and the README, from the current build.

Serves configs/serve.yaml (the `docs` collection filled with this project's documentation, as `make run` does;
one serving replica, to leave room on a small machine) on a free port, with its store and Ray in temp folders,
then opens each page in headless Chromium (Debian's chromium + chromium-driver) and saves it. The Jobs page's
screenshot comes from the browser test that follows a re-embedding to its swap
(``RAYPRISM_CONSOLE_SCREENSHOTS=docs/console pytest tests/integration/test_console.py``): serve.yaml has one model,
and a re-embedding moves a collection to another.

    .venv/bin/python scripts/console_screenshots.py [--out docs/console]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.console_browser import chromium, script_errors, wait_for  # noqa: E402

PAGES = [  # (file name, page, what shows it is drawn)
    ("collections", "collections", "a[href='#/collections/docs']"),
    ("collection", "collections/docs", "table[aria-label='Documents'] tbody tr"),
    ("search", "search?collection=docs&q=how%20do%20I%20run%20the%20tests", "ol.hits li"),
    ("models", "models", "svg.chart"),
    ("map", "map?collection=docs&color_by=path&q=how%20do%20I%20run%20the%20tests", "circle.hit"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "console")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rcs-", dir="/tmp"))  # Ray's socket paths must stay short
    config = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    port = free_port()
    config["server"].update(port=port, audit_log=str(work / "audit.jsonl"))
    config["store"]["uri"] = str(work / "rayprism.db")
    config["deployment"]["replicas"] = {"min": 1, "max": 1}
    (work / "serve.yaml").write_text(yaml.safe_dump(config))
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    environment["RAY_TMPDIR"] = str(work)
    process = subprocess.Popen([sys.executable, "-m", "rayprism.cli", "serve", str(work / "serve.yaml")], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        for line in process.stdout:
            print(line, end="")
            if "rayprism is serving at" in line:
                break
        else:
            raise SystemExit("rayprism serve ended before serving")
        deadline = time.monotonic() + 300
        while httpx.get(f"{url}/v1/collections/docs", timeout=30).json().get("count", 0) == 0:
            assert time.monotonic() < deadline, "the docs collection stayed empty"
            time.sleep(1)
        httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": ["warm the charts"] * 8}, timeout=60)
        with chromium() as driver:
            for name, page, ready in PAGES:
                driver.get(f"{url}/console/#/{page}")
                wait_for(driver, lambda d, ready=ready: d.find_elements("css selector", ready), 120, page)
                if name == "models":  # a few polls of /metrics, with requests between them
                    for _ in range(4):
                        httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": ["a"] * 16}, timeout=60)
                        time.sleep(3)
                time.sleep(1)
                errors = script_errors(driver)
                assert not errors, errors
                driver.save_screenshot(str(out / f"{name}.png"))
                print("saved", out / f"{name}.png")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
