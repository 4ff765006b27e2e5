"""Scoped keys through `rayprism serve` as a user runs it (the keyed service of tests/integration/conftest.py: its
own Ray, in a temp folder of its own, so its logs are this service's), keys given as text, as a digest and by an
environment variable, the SDK's typed errors, and each refusal in the service's log by the key's name, never the
key."""

import json
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from rayprism import Client, ForbiddenError, UnauthorizedError
from tests.integration.conftest import OPS, SEARCH_UI, TEAM_A

READER = SEARCH_UI  # the console's key tests sign in with it too


@pytest.fixture()
def scoped_service(keyed_service):
    """The keyed service's URL, Ray log folder and audit file (the console's key tests take it by this name)."""
    return keyed_service


def refusal(call, expected: type = ForbiddenError) -> str:
    """The service's message in the typed error the SDK raises."""
    with pytest.raises(expected) as refused:
        call()
    return refused.value.detail["message"]


def denials(logs: Path, since: str) -> list[dict]:
    """The audit records of refusals in the Serve logs (each a JSON object at the end of its line) made at ``since``
    or later: the service is shared with other tests of keys."""
    lines = [line for path in (logs / "serve").glob("*.log") for line in path.read_text().splitlines()]
    records = [json.loads(line[line.index('{"time"'):]) for line in lines if '{"time"' in line and "denied" in line]
    return [record for record in records if record["time"] >= since]


@pytest.mark.slow
def test_a_read_only_key_searches_a_team_key_stays_in_its_collections_and_each_refusal_is_logged_by_name(
        scoped_service):
    url, logs, audit_file = scoped_service
    since = datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # as the audit records write it
    with Client(url, api_key=OPS) as ops:
        for name in ("team_a_docs", "team_b_docs"):
            ops.create_collection(name, model="tiny", bm25=False)
            ops.upsert(name, [{"id": f"{name}-1", "text": f"the first document of {name}"}])
        ops.point_alias("docs_live", "team_b_docs")
        every = sorted(c["name"] for c in ops.collections()["data"])

    with Client(url, api_key=READER) as reader:
        hits = reader.search("team_b_docs", "first document", mode="dense", k=1)["results"]
        assert [hit["id"] for hit in hits] == ["team_b_docs-1"]
        assert refusal(lambda: reader.upsert("team_b_docs", [{"id": "x", "text": "no"}])) == (
            "this key (search-ui) lacks scope write:team_b_docs")
        assert refusal(lambda: reader.drop_collection("team_b_docs")) == (
            "this key (search-ui) lacks scope admin")
        assert refusal(lambda: reader.point_alias("docs_live", "team_a_docs")) == (
            "this key (search-ui) lacks scope admin")
        assert sorted(c["name"] for c in reader.collections()["data"]) == every  # read:* reads every one
        assert {"team_a_docs", "team_b_docs"} <= set(every)

    with Client(url, api_key=TEAM_A) as team_a:
        assert team_a.upsert("team_a_docs", [{"id": "a2", "text": "another"}])["upserted"] == 1
        assert refusal(lambda: team_a.search("team_b_docs", "first document")) == (
            "this key (team-a) lacks scope read:team_b_docs")
        assert refusal(lambda: team_a.document("team_b_docs", "team_b_docs-1")) == (
            "this key (team-a) lacks scope read:team_b_docs")
        assert [c["name"] for c in team_a.collections()["data"]] == ["team_a_docs"]
    with Client(url, api_key="sk-nobody-0123456789abcdef") as nobody:
        assert refusal(nobody.models, UnauthorizedError).startswith("a valid API key is required")
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # probes need no key, as before

    records = denials(logs, since)
    seen = [(r["key"], r["method"], r["path"], r["scope"], r["outcome"]) for r in records]
    assert seen == [
        ("search-ui", "POST", "/v1/collections/team_b_docs/documents", "write:team_b_docs", "denied 403"),
        ("search-ui", "DELETE", "/v1/collections/team_b_docs", "admin", "denied 403"),
        ("search-ui", "POST", "/v1/aliases", "admin", "denied 403"),
        ("team-a", "POST", "/v1/collections/team_b_docs/search", "read:team_b_docs", "denied 403"),
        ("team-a", "GET", "/v1/collections/team_b_docs/documents/team_b_docs-1", "read:team_b_docs", "denied 403"),
        ("unknown", "GET", "/v1/models", "key", "denied 401"),
    ], records
    audited = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [r for r in audited if r["outcome"].startswith("denied") and r["time"] >= since] == records
    every_log = [path for path in logs.rglob("*") if path.is_file()]
    leaked = [path.name for path in every_log for key in (OPS, READER, TEAM_A) if key.encode() in path.read_bytes()]
    assert every_log and leaked == []
