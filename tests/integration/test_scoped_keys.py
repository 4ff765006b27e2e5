"""Scoped keys through `rayprism serve` as a user runs it: its own Ray (in a temp folder of its own, so its logs
are this service's), keys given as text, as a digest and by an environment variable, the SDK's typed errors,
and each refusal in the service's log by the key's name, never the key."""

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from rayprism import Client, ForbiddenError, UnauthorizedError
from tests.integration.conftest import rayprism_serve

OPS = "sk-ops-0123456789abcdef"  # admin, from $RAYPRISM_TEST_OPS_KEY where the service runs
READER = "sk-search-ui-0123456789abcdef"
TEAM_A = "sk-team-a-0123456789abcdef"
CONFIG = """\
server:
  audit_log: {audit}
  api_keys:
    - {{name: search-ui, key: "{reader}", scopes: ["read:*"]}}
    - {{name: team-a, sha256: "{team_a}", scopes: ["embed", "read:team_a_*", "write:team_a_*"]}}
    - {{name: ops, key_env: RAYPRISM_TEST_OPS_KEY, scopes: ["admin"]}}
models:
  - {{name: tiny, source: {model}}}
store: {{uri: {store}}}
"""


@pytest.fixture()
def scoped_service(tmp_path, tiny_model_path):
    """The URL of a `rayprism serve` with the three keys above, and its Ray's log folder."""
    config = tmp_path / "serve.yaml"
    config.write_text(CONFIG.format(reader=READER, team_a=hashlib.sha256(TEAM_A.encode()).hexdigest(),
                                    model=tiny_model_path, store=tmp_path / "store.db", audit=tmp_path / "audit.jsonl"))
    with rayprism_serve(config, RAYPRISM_TEST_OPS_KEY=OPS) as (url, logs):
        yield url, logs, tmp_path / "audit.jsonl"


def refusal(call, expected: type = ForbiddenError) -> str:
    """The service's message in the typed error the SDK raises."""
    with pytest.raises(expected) as refused:
        call()
    return refused.value.detail["message"]


def denials(logs: Path) -> list[dict]:
    """The audit records in the Serve logs: each a JSON object at the end of its line."""
    lines = [line for path in (logs / "serve").glob("*.log") for line in path.read_text().splitlines()]
    return [json.loads(line[line.index('{"time"'):]) for line in lines if '{"time"' in line and "denied" in line]


@pytest.mark.slow
def test_a_read_only_key_searches_a_team_key_stays_in_its_collections_and_each_refusal_is_logged_by_name(
        scoped_service):
    url, logs, audit_file = scoped_service
    with Client(url, api_key=OPS) as ops:
        for name in ("team_a_docs", "team_b_docs"):
            ops.create_collection(name, model="tiny", bm25=False)
            ops.upsert(name, [{"id": f"{name}-1", "text": f"the first document of {name}"}])
        ops.point_alias("docs_live", "team_b_docs")

    with Client(url, api_key=READER) as reader:
        hits = reader.search("team_b_docs", "first document", mode="dense", k=1)["results"]
        assert [hit["id"] for hit in hits] == ["team_b_docs-1"]
        assert refusal(lambda: reader.upsert("team_b_docs", [{"id": "x", "text": "no"}])) == (
            "this key (search-ui) lacks scope write:team_b_docs")
        assert refusal(lambda: reader.drop_collection("team_b_docs")) == (
            "this key (search-ui) lacks scope admin")
        assert refusal(lambda: reader.point_alias("docs_live", "team_a_docs")) == (
            "this key (search-ui) lacks scope admin")
        assert sorted(c["name"] for c in reader.collections()["data"]) == ["team_a_docs", "team_b_docs"]

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

    records = denials(logs)
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
    assert [record for record in audited if record["outcome"].startswith("denied")] == records
    every_log = [path for path in logs.rglob("*") if path.is_file()]
    leaked = [path.name for path in every_log for key in (OPS, READER, TEAM_A) if key.encode() in path.read_bytes()]
    assert every_log and leaked == []
