"""`rayprism tune` against the running service, on a collection of its own (the 120 Debian sample documents and
their 40 queries), with a budget of a few trials: its scores checked against MRR@10 computed here from /search
answers, then `--apply` checked through plain and explicit searches.

The collection starts with deliberately bad defaults (a rerank stage by the tiny, randomly initialised
cross-encoder, which shuffles the best 50 hits): the run must find better settings and apply them, so the check
of `--apply` never depends on a close call between two good settings."""

import json
import os
import subprocess
import sys

import httpx
import pytest

from rayprism.jobs.tune import queries_of, split_queries
from rayprism.platform.config import SearchDefaults
from tests.integration.conftest import SAMPLE_FIELDS
from tests.integration.test_collections import DATA, DOCUMENTS, post, wait_for_mirror

COLLECTION = "debian_tune"
QUERIES = DATA / "debian-sample-queries.jsonl"
BAD_DEFAULTS = {"mode": "hybrid", "rerank": {"model": "judge", "candidates": 50, "weight": 1.0}}
TRIALS, HOLDOUT, SEED = 6, 0.25, 3


@pytest.fixture(scope="module")
def tuned_collection(service_url):
    spec = {"name": COLLECTION, "model": "minilm", "fields": SAMPLE_FIELDS}
    assert post(service_url, "/v1/collections", spec).status_code == 201
    try:
        for start in range(0, len(DOCUMENTS), 60):
            answer = post(service_url, f"/v1/collections/{COLLECTION}/documents",
                          {"documents": DOCUMENTS[start : start + 60]})
            assert answer.status_code == 200, answer.text
        wait_for_mirror(service_url, COLLECTION)
        answer = httpx.put(f"{service_url}/v1/collections/{COLLECTION}/search_defaults", json=BAD_DEFAULTS, timeout=60)
        assert answer.status_code == 200 and answer.json()["search_defaults_applied"] is True, answer.text
        yield service_url
    finally:
        httpx.delete(f"{service_url}/v1/collections/{COLLECTION}", timeout=60)


def rayprism_tune(*args: str) -> subprocess.CompletedProcess:
    """`rayprism tune` as a user runs it: it starts a Ray of its own (never this session's)."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_",
                                                                                              "RAY_ADDRESS"))}
    return subprocess.run([sys.executable, "-m", "rayprism.cli", "tune", *args], capture_output=True, text=True,
                          timeout=600, env=environment)


def mrr_at_10(url: str, queries, settings: dict | None) -> float:
    """MRR@10 computed here: each query searched through /search (with ``settings`` given explicitly, or plain)."""
    total = 0.0
    with httpx.Client(base_url=url, timeout=120) as http:
        for query in queries:
            body = {"query": query.text, "k": 10, **(settings or {})}
            answer = http.post(f"/v1/collections/{COLLECTION}/search", json=body)
            assert answer.status_code == 200, answer.text
            ids = [hit["id"] for hit in answer.json()["results"]]
            total += next((1 / rank for rank, doc_id in enumerate(ids, start=1) if doc_id in query.relevant), 0.0)
    return total / len(queries)


def explicit(settings: dict) -> dict:
    """Trial settings as a search gives them: every one, null where unset (the collection's defaults out of play)."""
    return {"mode": settings.get("mode"), "fusion": settings.get("fusion", {"type": "weighted"}),
            "candidates": settings.get("candidates"), "rerank": settings.get("rerank")}


def test_tune_finds_better_settings_scores_them_truly_and_applies_them(tuned_collection, tmp_path):
    url = tuned_collection
    report_path, plot_path = tmp_path / "report.json", tmp_path / "front.png"
    run = rayprism_tune(COLLECTION, "--queries", str(QUERIES), "--url", url, "--trials", str(TRIALS), "--holdout",
                        str(HOLDOUT), "--seed", str(SEED), "--concurrency", "2", "--apply", "--plot", str(plot_path),
                        "--report", str(report_path))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    report = json.loads(report_path.read_text())
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # progress as trials end, then the front, the choice and the held-out comparison
    assert sum(line.startswith("[") and f"/{TRIALS}]" in line for line in out.splitlines()) == TRIALS, out
    assert "the Pareto front" in out and "| trial | MRR@10 |" in out and "chosen: trial" in out, out
    assert "on the 10 held-out queries" in out and "applied:" in out, out
    assert (report["tuning_queries"], report["held_out_queries"]) == (30, 10)
    trials = {trial["number"]: trial for trial in report["trials"]}
    assert sorted(trials) == list(range(1, TRIALS + 1))
    first = trials[1]  # the current settings run first: the bad rerank stage
    assert first["settings"]["rerank"]["model"] == "judge" and first["settings"]["rerank"]["weight"] == 1.0
    assert [trials[2]["settings"]["mode"], trials[3]["settings"]["mode"]] == ["dense", "sparse"]

    # the front: complete trials only, and each one's MRR@10 is what /search answers for its settings
    tuning, held_out = split_queries(queries_of({"query": row["query"], "relevant": [row["doc_id"]]}
                                                for row in map(json.loads, QUERIES.read_text().splitlines())),
                                     HOLDOUT, SEED)
    front = [trials[number] for number in report["front"]]
    assert front and all(trial["complete"] for trial in front)
    assert [trial["scores"]["p50_ms"] for trial in front] == sorted(trial["scores"]["p50_ms"] for trial in front)
    # (trials without a rerank stage: a cross-encoder's batches mix the pairs of the trials running at once, and
    # padding moves its scores in the last digits, enough to swap two near-equal hits of the random one)
    checked = [trial for trial in front if trial["settings"].get("rerank") is None]
    assert checked, front
    best = checked[-1]
    assert best["scores"]["mrr_at_10"] == pytest.approx(mrr_at_10(url, tuning, explicit(best["settings"])))
    chosen = report["chosen"]
    assert chosen["number"] == max(front, key=lambda trial: trial["scores"]["mrr_at_10"])["number"]

    # held out: the choice beat the bad defaults, and both figures are what /search answers
    scores = report["held_out"]
    assert scores["chosen"]["mrr_at_10"] > scores["current"]["mrr_at_10"]
    assert scores["chosen"]["mrr_at_10"] == pytest.approx(mrr_at_10(url, held_out, explicit(chosen["settings"])))
    assert scores["current"]["mrr_at_10"] == pytest.approx(mrr_at_10(url, held_out, explicit(BAD_DEFAULTS)))

    # --apply: the choice is the collection's defaults now; a plain search follows them, a request still overrides
    described = httpx.get(f"{url}/v1/collections/{COLLECTION}", timeout=60).json()
    assert report["applied"] and described["search_defaults_applied"]
    assert SearchDefaults.model_validate(described["search_defaults"]) == SearchDefaults.model_validate(
        chosen["settings"])
    assert mrr_at_10(url, held_out, None) == pytest.approx(scores["chosen"]["mrr_at_10"])
    plain = post(url, f"/v1/collections/{COLLECTION}/search", {"query": held_out[0].text}).json()
    assert plain["mode"] == chosen["settings"]["mode"]
    overridden = post(url, f"/v1/collections/{COLLECTION}/search", {"query": held_out[0].text, "mode": "sparse",
                                                                    "rerank": None}).json()
    assert overridden["mode"] == "sparse" and all("rerank_score" not in hit for hit in overridden["results"])


def test_tune_refuses_what_it_cannot_run(service_url, tmp_path):
    empty = post(service_url, "/v1/collections", {"name": "tune_empty", "model": "minilm"})
    assert empty.status_code in (200, 201)
    try:
        nothing = rayprism_tune("tune_empty", "--queries", str(QUERIES), "--url", service_url)
        assert nothing.returncode == 2 and "has no documents to tune on" in nothing.stderr, nothing.stderr
        few = tmp_path / "few.jsonl"
        few.write_text('{"query": "a", "doc_id": 1}\n{"query": "b", "doc_id": 2}\n')
        split = rayprism_tune("tune_empty", "--queries", str(few), "--url", service_url, "--holdout", "0.5")
        assert split.returncode == 2 and "give at least 2 to tune on" in split.stderr, split.stderr
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "no query here"}\n')
        unreadable = rayprism_tune("tune_empty", "--queries", str(bad), "--url", service_url)
        assert unreadable.returncode == 2 and "needs query and relevant" in unreadable.stderr, unreadable.stderr
        missing = rayprism_tune("no_such_collection", "--queries", str(QUERIES), "--url", service_url)
        assert missing.returncode == 2 and "does not exist" in missing.stderr, missing.stderr
    finally:
        httpx.delete(f"{service_url}/v1/collections/tune_empty", timeout=60)
