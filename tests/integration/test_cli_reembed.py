"""`rayprism reembed`, `rayprism reembed-status` and `rayprism rollback` against the running service, on a
collection of 24 documents: clip (a tiny random CLIP's text tower) moves to minilm and back."""

import json
import time

import httpx

from tests.integration.conftest import SAMPLE_FIELDS
from tests.integration.test_cli_client import rayprism
from tests.integration.test_reembed import DOCUMENTS, make_alias, target


def status(url: str, job_id: str) -> dict:
    shown = rayprism("reembed-status", job_id, "--url", url)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return json.loads(shown.stdout)


def test_reembed_status_and_rollback_move_an_alias_and_say_where_it_went(service_url):
    url = service_url
    make_alias(url, "cli_rb", "cli_rb_v1", "clip", DOCUMENTS[:24])

    moved = rayprism("reembed", "cli_rb", "--model", "minilm", "--min-score", "0", "--batch-size", "8", "--url", url)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "job cli_rb-1: cli_rb_v1 → cli_rb_v2 with minilm" in moved.stdout
    assert "gate top10_agreement: new " in moved.stdout and "threshold 0.000 → passed" in moved.stdout
    assert "cli_rb → cli_rb_v2 (minilm); cli_rb_v1 is kept (`rayprism rollback cli_rb` points back)" in moved.stdout
    assert target(url, "cli_rb") == "cli_rb_v2"

    job = status(url, "cli_rb-1")
    assert (job["state"], job["direction"], job["model"], job["source_model"]) == ("done", "forward", "minilm", "clip")
    assert job["documents_done"] == job["documents_total"] == 24
    assert job["bridge"]["method"] == "procrustes" and job["bridge"]["fit_rows"] > 0

    busy = rayprism("reembed", "cli_rb", "--model", "minilm", "--url", url)
    assert busy.returncode == 2 and "is embedded by model 'minilm' already" in busy.stderr, busy.stderr

    back = rayprism("rollback", "cli_rb", "--url", url)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "job cli_rb-2: cli_rb_v2 → cli_rb_v1 (clip)" in back.stdout
    assert "cli_rb → cli_rb_v1 again (clip)" in back.stdout
    assert target(url, "cli_rb") == "cli_rb_v1"
    assert status(url, "cli_rb-2")["direction"] == "rollback"

    nothing = rayprism("rollback", "cli_rb", "--url", url)
    assert nothing.returncode == 2 and "nothing to roll back" in nothing.stderr, nothing.stderr

    # --no-wait answers at once; the job runs on in the service and reembed-status follows it
    started = rayprism("reembed", "cli_rb", "--model", "minilm", "--min-score", "0", "--no-wait", "--url", url)
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.strip() == "job cli_rb-3: cli_rb_v1 → cli_rb_v3 with minilm"
    deadline = time.monotonic() + 300
    while (job := status(url, "cli_rb-3"))["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["state"] == "done" and target(url, "cli_rb") == "cli_rb_v3", job


def test_unknown_aliases_models_and_jobs_are_clear_errors(service_url):
    url = service_url
    unknown_alias = rayprism("reembed", "no_such_alias", "--model", "minilm", "--url", url)
    assert unknown_alias.returncode == 2
    assert "collection 'no_such_alias' does not exist" in unknown_alias.stderr, unknown_alias.stderr
    assert "Traceback" not in unknown_alias.stderr

    created = httpx.post(f"{url}/v1/collections", json={"name": "cli_plain", "model": "clip", "fields": SAMPLE_FIELDS},
                         timeout=60)
    assert created.status_code in (200, 201), created.text
    not_an_alias = rayprism("reembed", "cli_plain", "--model", "minilm", "--url", url)
    assert not_an_alias.returncode == 2 and "'cli_plain' is a collection, not an alias" in not_an_alias.stderr
    assert "rayprism alias set cli_plain_live cli_plain" in not_an_alias.stderr

    make_alias(url, "cli_rb_models", "cli_rb_models_v1", "clip", DOCUMENTS[:4])
    unknown_model = rayprism("reembed", "cli_rb_models", "--model", "no-such-model", "--url", url)
    assert unknown_model.returncode == 2, unknown_model.stdout + unknown_model.stderr
    assert "model 'no-such-model' does not exist; available: [" in unknown_model.stderr
    a_reranker = rayprism("reembed", "cli_rb_models", "--model", "judge", "--url", url)
    assert a_reranker.returncode == 2 and "judge" in a_reranker.stderr and "reranker" in a_reranker.stderr
    assert httpx.get(f"{url}/v1/collections/cli_rb_models/reembed", timeout=60).json()["data"] == []  # none started

    unknown_job = rayprism("reembed-status", "cli_rb_models-9", "--url", url)
    assert unknown_job.returncode == 2 and "re-embedding job 'cli_rb_models-9' does not exist" in unknown_job.stderr
    no_rollback = rayprism("rollback", "no_such_alias", "--url", url)
    assert no_rollback.returncode == 2 and "collection 'no_such_alias' does not exist" in no_rollback.stderr

    bad_queries = rayprism("reembed", "cli_rb_models", "--model", "minilm", "--queries", "/no/such/file.jsonl",
                           "--url", url)
    assert bad_queries.returncode == 2 and "does not exist" in bad_queries.stderr
