"""Quotas, the audit trail and request ids through `rayprism serve` as a user runs it (the keyed service of
tests/integration/conftest.py: its own Ray, keys of its own): a throttled key is refused before its body is read
while another key is answered, /metrics counts the refusals by name, every change is one line of the audit file,
and every response carries its request id."""

import json
import re
import time

import httpx

from tests.integration.conftest import BATCH, FLOOD, OPS, READER


def call(url: str, key: str, method: str, path: str, **options) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {key}",
                                                          **options.pop("headers", {})}, timeout=60, **options)


def test_a_key_over_its_quota_gets_429_before_its_body_is_read_while_another_key_is_answered(keyed_service):
    url, _, _ = keyed_service
    started = time.monotonic()
    answers = [call(url, FLOOD, "GET", "/v1/models") for _ in range(6)]
    elapsed = time.monotonic() - started
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(200) <= 2 + elapsed * 1  # the burst, and what refilled meanwhile (1/s)
    assert call(url, OPS, "GET", "/v1/models").status_code == 200  # the same second: another key is answered
    invalid = call(url, FLOOD, "POST", "/v1/embeddings", content=b"{not json")
    assert invalid.status_code == 429, invalid.text  # refused before parsing: a 400 would mean it was read
    assert invalid.json()["error"]["code"] == "rate_limited"
    assert invalid.json()["error"]["message"].startswith("this key (flood) is over its requests per second quota")
    assert re.fullmatch(r"[1-9][0-9]*", invalid.headers["Retry-After"])
    assert int(invalid.headers["Retry-After"]) <= 2

    batch = [call(url, BATCH, "POST", "/v1/embeddings", json={"model": "tiny", "input": ["x"] * 8})
             for _ in range(2)]
    assert [answer.status_code for answer in batch] == [200, 429], [answer.text for answer in batch]
    assert "over its inputs per second quota" in batch[1].json()["error"]["message"]
    too_many = call(url, BATCH, "POST", "/v1/embeddings", json={"model": "tiny", "input": ["x"] * 11})
    assert too_many.status_code == 413 and "at most 10 inputs at once" in too_many.text

    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    throttled = {match[0]: float(match[1]) for match in re.findall(
        r'^rayprism_throttled_requests_total\{key="([^"]+)",limit="requests"\} (\S+)$', metrics, re.M)}
    assert throttled["flood"] == statuses.count(429) + 1 and "ops" not in throttled
    assert re.search(r'^rayprism_throttled_requests_total\{key="batch",limit="inputs"\} 2\.0$', metrics, re.M)
    assert not [key for key in (OPS, FLOOD, BATCH, READER) if key in metrics]


def test_every_change_and_refusal_is_one_audit_line_and_every_response_carries_its_request_id(keyed_service):
    url, logs, audit_file = keyed_service
    before = len(audit_file.read_text().splitlines()) if audit_file.exists() else 0
    steps = [  # (key, method, path, body, status)
        (OPS, "POST", "/v1/collections", {"name": "audited", "model": "tiny", "bm25": False}, 201),
        (OPS, "POST", "/v1/collections/audited/documents",
         {"documents": [{"id": str(n), "text": f"document {n}"} for n in range(3)]}, 200),
        (READER, "POST", "/v1/collections/audited/documents", {"documents": [{"id": "x", "text": "no"}]}, 403),
        (OPS, "DELETE", "/v1/collections/audited/documents", {"ids": ["0", "nobody"]}, 200),
        (OPS, "POST", "/v1/collections/nowhere/documents", {"documents": [{"id": "x", "text": "x"}]}, 404),
        (OPS, "POST", "/v1/aliases", {"name": "audited_live", "collection": "audited"}, 201),
        (OPS, "DELETE", "/v1/aliases/audited_live", None, 200),
        (OPS, "DELETE", "/v1/collections/audited", None, 200),
    ]
    ids = []
    for number, (key, method, path, body, status) in enumerate(steps):
        ids.append(f"audit-step-{number}")
        answer = call(url, key, method, path, json=body, headers={"X-Request-Id": ids[-1]})
        assert answer.status_code == status, answer.text
        assert answer.headers["X-Request-Id"] == ids[-1]

    records = [json.loads(line) for line in audit_file.read_text().splitlines()[before:]]
    seen = [(r["key"], r["method"], r["route"], r["target"], r.get("count"), r.get("upserted", r.get("deleted")),
             r["outcome"], r["request_id"]) for r in records]
    assert seen == [
        ("ops", "POST", "/v1/collections", "audited", None, None, "ok", ids[0]),
        ("ops", "POST", "/v1/collections/{name}/documents", "audited", 3, 3, "ok", ids[1]),
        ("reader", "POST", "/v1/collections/{name}/documents", "audited", None, None, "denied 403", ids[2]),
        ("ops", "DELETE", "/v1/collections/{name}/documents", "audited", 2, 1, "ok", ids[3]),
        ("ops", "POST", "/v1/collections/{name}/documents", "nowhere", 1, None, "failed 404", ids[4]),
        ("ops", "POST", "/v1/aliases", "audited_live", None, None, "ok", ids[5]),
        ("ops", "DELETE", "/v1/aliases/{name}", "audited_live", None, None, "ok", ids[6]),
        ("ops", "DELETE", "/v1/collections/{name}", "audited", None, None, "ok", ids[7]),
    ], records
    assert records[5]["collection"] == "audited" and records[0]["created"] is True
    serve_log = "".join(path.read_text() for path in (logs / "serve").glob("*.log"))
    assert all(request_id in serve_log for request_id in ids)  # Serve's lines carry the caller's id
    assert not [key for key in (OPS, FLOOD, BATCH, READER) if key in audit_file.read_text()]

    made = [call(url, OPS, "GET", "/v1/models"), call(url, OPS, "GET", "/v1/models/nothing"),
            call(url, "sk-nobody-0123456789abcdef", "GET", "/v1/models"), call(url, FLOOD, "GET", "/v1/models")]
    assert [answer.status_code for answer in made][:3] == [200, 404, 401]
    made_ids = [answer.headers["X-Request-Id"] for answer in made]  # one each, made (uuid4, Serve's or ours)
    assert all(re.fullmatch(r"[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}", request_id)
               for request_id in made_ids) and len(set(made_ids)) == 4, made_ids

    overlong = call(url, OPS, "DELETE", "/v1/aliases/nothing", headers={"X-Request-Id": "x" * 129})
    assert overlong.status_code == 404
    denied, record = [json.loads(line) for line in audit_file.read_text().splitlines()[before + len(steps):]]
    assert (denied["key"], denied["outcome"], denied["request_id"]) == ("unknown", "denied 401", made_ids[2])
    assert (record["target"], record["outcome"]) == ("nothing", "failed 404")
    assert re.fullmatch(r"[0-9a-f]{32}", record["request_id"])  # not the caller's: too long to keep


def finished(url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 300
    while (job := call(url, OPS, "GET", f"/v1/reembed/{job_id}").json())["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    return job


def test_a_reembedding_and_its_rollback_are_audited_with_the_swaps_their_workers_make(keyed_service):
    url, _, audit_file = keyed_service
    documents = [{"id": str(n), "text": f"a document about topic {n}"} for n in range(20)]
    for method, path, body in [("POST", "/v1/collections", {"name": "moved", "model": "tiny", "bm25": False}),
                               ("POST", "/v1/collections/moved/documents", {"documents": documents}),
                               ("POST", "/v1/aliases", {"name": "moved_live", "collection": "moved"})]:
        assert call(url, OPS, method, path, json=body).status_code in (200, 201)
    started = call(url, OPS, "POST", "/v1/collections/moved_live/reembed", headers={"X-Request-Id": "move-it"},
                   json={"model": "tiny2", "evaluation": {"min_score": 0}})
    assert started.status_code == 202, started.text
    assert finished(url, started.json()["id"])["state"] == "done"
    back = call(url, OPS, "POST", "/v1/collections/moved_live/rollback", headers={"X-Request-Id": "undo-it"})
    assert back.status_code == 202, back.text
    assert finished(url, back.json()["id"])["state"] == "done"

    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    jobs = [(r["key"], r["route"], r["target"], r.get("event"), r.get("collection"), r["outcome"], r["request_id"])
            for r in records if r.get("job") in (started.json()["id"], back.json()["id"])]
    assert jobs == [
        ("ops", "/v1/collections/{name}/reembed", "moved_live", None, None, "ok", "move-it"),
        ("ops", "/v1/collections/{name}/reembed", "moved_live", "forward swap", "moved_live_v2", "swapped", "move-it"),
        ("ops", "/v1/collections/{name}/rollback", "moved_live", None, None, "ok", "undo-it"),
        ("ops", "/v1/collections/{name}/rollback", "moved_live", "rollback swap", "moved", "swapped", "undo-it"),
    ], jobs

