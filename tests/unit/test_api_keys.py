"""Scoped API keys: the config forms, and the scope every route needs, through the app ``create_app`` builds over
a real store replica (Milvus Lite) and a tiny model, driven by a real HTTP client in this process."""

import asyncio
import hashlib
import json
import logging
import re

import httpx
import pytest
from fastapi.routing import APIRoute

from rayprism.deployments.collection_routes import CollectionServices
from rayprism.deployments.http import create_app
from rayprism.deployments.launch import own_key, preflight
from rayprism.deployments.scopes import ROUTE_SCOPES
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store import StoreReplica
from rayprism.platform.config import ModelConfig, SeedConfig, ServeConfig, ServerConfig, StoreConfig
from rayprism.platform.config.base import parse_config
from rayprism.platform.errors import ConfigError

ADMIN = "sk-admin-0123456789abcdef"
READER = "sk-search-ui-0123456789abcdef"
TEAM_A = "sk-team-a-0123456789abcdef"
EMBEDDER = "sk-embedder-0123456789abcdef"
KEYS = [
    ADMIN,
    {"name": "search-ui", "key": READER, "scopes": ["read:*"]},
    {"name": "team-a", "sha256": hashlib.sha256(TEAM_A.encode()).hexdigest(),
     "scopes": ["embed", "read:team_a_*", "write:team_a_*"]},
    {"name": "embedder", "key_env": "TEST_EMBEDDER_KEY", "scopes": ["embed"]},
]


def server(api_keys) -> ServerConfig:
    return ServerConfig(api_keys=api_keys)


def test_each_form_of_key_is_known_by_its_digest_and_a_bare_string_may_do_everything(monkeypatch):
    monkeypatch.setenv("TEST_EMBEDDER_KEY", EMBEDDER)
    monkeypatch.setenv("RAYPRISM_API_KEYS", "sk-from-env-0123456789abcdef")
    keys = server(KEYS).resolved_api_keys()
    assert [key.name for key in keys] == ["api_keys.0", "search-ui", "team-a", "embedder", "RAYPRISM_API_KEYS.0"]
    texts = [ADMIN, READER, TEAM_A, EMBEDDER, "sk-from-env-0123456789abcdef"]
    assert [key.digest for key in keys] == [hashlib.sha256(text.encode()).digest() for text in texts]
    assert [key.scopes for key in keys] == [("admin",), ("read:*",), ("embed", "read:team_a_*", "write:team_a_*"),
                                            ("embed",), ("admin",)]
    assert [key.secret for key in keys] == [ADMIN, READER, None, EMBEDDER, "sk-from-env-0123456789abcdef"]
    assert TEAM_A not in repr(keys) and READER not in repr(server(KEYS))


@pytest.mark.parametrize(("entry", "says"), [
    ({"name": "x", "scopes": ["embed"]}, "exactly one of key, sha256, key_env (given: [])"),
    ({"name": "x", "key": READER, "key_env": "V", "scopes": ["embed"]}, "(given: ['key', 'key_env'])"),
    ({"name": "x", "key": READER, "scopes": ["raed:*"]}, "'raed:*' is not a scope"),
    ({"name": "x", "key": READER, "scopes": ["read:"]}, "'read:' is not a scope"),
    ({"name": "x", "key": READER, "scopes": []}, "scopes"),
    ({"name": "x", "sha256": "abc", "scopes": ["embed"]}, "sha256"),
    ({"name": "x", "key": "short", "scopes": ["embed"]}, "at least 16 characters"),
    ({"name": "no spaces", "key": READER, "scopes": ["embed"]}, "must start with a letter"),
])
def test_a_bad_key_entry_is_refused_when_the_config_loads(entry, says):
    with pytest.raises(ConfigError, match="server.api_keys") as refused:
        parse_config(ServeConfig, {"server": {"api_keys": [entry]}}, "serve.yaml")
    assert says in str(refused.value)


def test_names_and_keys_are_given_once_and_a_key_env_must_be_set(monkeypatch):
    twice = [{"name": "a", "key": READER, "scopes": ["embed"]}, {"name": "a", "key": TEAM_A, "scopes": ["embed"]}]
    with pytest.raises(ConfigError, match=r"API key names must be unique, repeated: \['a'\]"):
        parse_config(ServeConfig, {"server": {"api_keys": twice}}, "serve.yaml")
    same_key = [READER, {"name": "ui", "sha256": hashlib.sha256(READER.encode()).hexdigest(), "scopes": ["embed"]}]
    with pytest.raises(ConfigError, match=r"given more than once, as \['api_keys.0', 'ui'\]"):
        server(same_key).resolved_api_keys()
    monkeypatch.delenv("TEST_EMBEDDER_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"API key 'embedder': \$TEST_EMBEDDER_KEY is not set"):
        server(KEYS).resolved_api_keys()
    monkeypatch.setenv("TEST_EMBEDDER_KEY", "short")
    with pytest.raises(ConfigError, match=r"\$TEST_EMBEDDER_KEY is too short"):
        server(KEYS).resolved_api_keys()


def test_the_services_own_calls_use_an_admin_key_it_knows_and_narrow_keys_alone_are_refused_at_start(
        tiny_model_path, monkeypatch):
    monkeypatch.setenv("TEST_EMBEDDER_KEY", EMBEDDER)
    models = [ModelConfig(name="tiny", source=tiny_model_path)]
    assert own_key(ServeConfig(server=server(KEYS), models=models)) == ADMIN
    ops = {"name": "ops", "key_env": "TEST_OPS_KEY", "scopes": ["admin"]}
    monkeypatch.setenv("TEST_OPS_KEY", "sk-ops-0123456789abcdef")
    assert own_key(ServeConfig(server=server([KEYS[1], ops]), models=models)) == "sk-ops-0123456789abcdef"
    narrow = ServeConfig(server=server(KEYS[1:]), models=models)  # the admin key only as a digest
    assert own_key(narrow) is None
    preflight(narrow, print)  # nothing of its own to call: fine
    seeded = narrow.model_copy(update={"seed": SeedConfig(collection="docs", files=["*.md"])})
    with pytest.raises(ConfigError, match=r"none of \['search-ui', 'team-a', 'embedder'\] is an admin key"):
        preflight(seeded, print)


@pytest.fixture(scope="module")
def app(tiny_model_path, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEST_EMBEDDER_KEY", EMBEDDER)
        audit_log = str(tmp_path_factory.mktemp("audit") / "audit.jsonl")
        embeddings = EmbeddingService(ServeConfig(server=server(KEYS).model_copy(update={"audit_log": audit_log}),
                                                  models=[ModelConfig(name="tiny", source=tiny_model_path)]))
        assert embeddings.wait_loaded(120)
        store = StoreReplica(StoreConfig(uri=str(tmp_path_factory.mktemp("keys") / "store.db"),
                                         flush_after_s=0.1).model_dump(), [])
        application = create_app(embeddings, CollectionServices.build(embeddings, store))
    for call in [("POST", "/v1/collections", {"name": "team_a_docs", "model": "tiny", "bm25": False}),
                 ("POST", "/v1/collections", {"name": "team_b_docs", "model": "tiny", "bm25": False}),
                 ("POST", "/v1/collections/team_a_docs/documents", {"documents": [{"id": "a", "text": "ours"}]}),
                 ("POST", "/v1/collections/team_b_docs/documents", {"documents": [{"id": "b", "text": "theirs"}]}),
                 ("POST", "/v1/aliases", {"name": "team_a_live", "collection": "team_b_docs"})]:
        assert asyncio.run(send(application, ADMIN, *call)).status_code in (200, 201)
    yield application
    store.close()
    embeddings.close()


async def send(app, key: str | None, method: str, path: str, body=None, headers: dict | None = None) -> httpx.Response:
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keys") as client:
        return await client.request(method, path, json=body, headers=headers)


@pytest.mark.slow  # Milvus Lite
def test_every_v1_route_has_its_line_in_the_scope_table(app):
    declared = {(method, route.path) for route in app.routes if isinstance(route, APIRoute)
                and route.path.startswith("/v1") for method in route.methods}
    assert declared == set(ROUTE_SCOPES)


SEARCH = {"query": "ours"}
WRITE = {"documents": [{"id": "c", "text": "new"}]}
DELETE = {"ids": ["zz"]}
CASES = [  # (method, path, body, key, status or the scope a 403 names); a 422 or 404 comes from the route: let through
    ("POST", "/v1/embeddings", {"model": "tiny", "input": "x"}, EMBEDDER, 200),
    ("POST", "/v1/embeddings", {"model": "tiny", "input": "x"}, TEAM_A, 200),
    ("POST", "/v1/embeddings", {"model": "tiny", "input": "x"}, READER, "embed"),
    ("POST", "/v1/embeddings", {"model": "tiny", "input": "x"}, None, 401),
    ("POST", "/v1/embeddings", {"model": "tiny", "input": "x"}, "sk-not-a-key-0123456789", 401),
    ("POST", "/v1/rerank", {}, EMBEDDER, 422),
    ("POST", "/v1/rerank", {}, READER, "embed"),
    ("GET", "/v1/models", None, READER, 200),
    ("GET", "/v1/models/tiny", None, EMBEDDER, 200),
    ("GET", "/v1/collections", None, READER, 200),
    ("GET", "/v1/collections", None, EMBEDDER, "read:GLOB"),
    ("POST", "/v1/collections", {"name": "team_a_docs", "model": "tiny", "bm25": False}, ADMIN, 200),
    ("POST", "/v1/collections", {"name": "team_a_more", "model": "tiny", "bm25": False}, TEAM_A, "admin"),
    ("GET", "/v1/collections/team_a_docs", None, TEAM_A, 200),
    ("GET", "/v1/collections/team_b_docs", None, TEAM_A, "read:team_b_docs"),
    ("GET", "/v1/collections/team_b_docs", None, READER, 200),
    ("DELETE", "/v1/collections/team_a_docs", None, TEAM_A, "admin"),
    ("DELETE", "/v1/collections/team_b_docs", None, READER, "admin"),
    ("DELETE", "/v1/collections/nowhere", None, ADMIN, 404),
    ("POST", "/v1/collections/team_a_docs/documents", WRITE, TEAM_A, 200),
    ("POST", "/v1/collections/team_a_docs/documents", WRITE, READER, "write:team_a_docs"),
    ("POST", "/v1/collections/team_b_docs/documents", WRITE, TEAM_A, "write:team_b_docs"),
    ("GET", "/v1/collections/team_b_docs/documents/b", None, READER, 200),
    ("GET", "/v1/collections/team_b_docs/documents/b", None, TEAM_A, "read:team_b_docs"),
    ("GET", "/v1/collections/team_a_docs/documents/a", None, EMBEDDER, "read:team_a_docs"),
    ("DELETE", "/v1/collections/team_a_docs/documents", DELETE, TEAM_A, 200),
    ("DELETE", "/v1/collections/team_b_docs/documents", DELETE, TEAM_A, "write:team_b_docs"),
    ("DELETE", "/v1/collections/team_b_docs/documents", DELETE, READER, "write:team_b_docs"),
    ("DELETE", "/v1/collections/team_b_docs/documents", DELETE, ADMIN, 200),
    ("POST", "/v1/collections/team_b_docs/search", SEARCH, READER, 200),
    ("POST", "/v1/collections/team_b_docs/search", SEARCH, TEAM_A, "read:team_b_docs"),
    ("POST", "/v1/collections/team_a_live/search", SEARCH, TEAM_A, 200),  # judged by the alias's name
    ("POST", "/v1/collections/team_a_docs/search", SEARCH, EMBEDDER, "read:team_a_docs"),
    ("POST", "/v1/collections/team_a_docs/reembed", {}, TEAM_A, "admin"),
    ("POST", "/v1/collections/team_a_docs/reembed", {}, ADMIN, 422),
    ("GET", "/v1/collections/team_a_docs/reembed", None, TEAM_A, "admin"),
    ("POST", "/v1/collections/team_a_docs/rollback", None, TEAM_A, "admin"),
    ("GET", "/v1/reembed/no-such-job", None, TEAM_A, "admin"),
    ("GET", "/v1/aliases", None, TEAM_A, 200),
    ("GET", "/v1/aliases", None, EMBEDDER, "read:GLOB"),
    ("POST", "/v1/aliases", {"name": "team_a_live", "collection": "team_a_docs"}, TEAM_A, "admin"),
    ("POST", "/v1/aliases", {"name": "team_a_live", "collection": "team_a_docs"}, READER, "admin"),
    ("DELETE", "/v1/aliases/team_a_live", None, TEAM_A, "admin"),
    ("POST", "/v1/collections/team_a_docs/snapshots", None, TEAM_A, "admin"),
    ("POST", "/v1/collections/team_b_docs/snapshots", {}, READER, "admin"),
    ("GET", "/v1/snapshots/snap_0/pages/0", None, READER, "admin"),
    ("GET", "/v1/snapshots/snap_0/pages/0", None, ADMIN, 404),
    ("DELETE", "/v1/snapshots/snap_0", None, TEAM_A, "admin"),
    ("POST", "/v1/collections/team_a_docs/rows", None, TEAM_A, "admin"),
    ("GET", "/v1/keys/me", None, READER, 200),
    ("GET", "/v1/keys/me", None, None, 401),
    ("GET", "/v1/collections/team_b_docs/documents?limit=5", None, READER, 200),
    ("GET", "/v1/collections/team_b_docs/documents", None, TEAM_A, "read:team_b_docs"),
    ("GET", "/v1/collections/team_a_docs/map", None, TEAM_A, 200),
    ("GET", "/v1/collections/team_b_docs/map", None, EMBEDDER, "read:team_b_docs"),
    ("GET", "/console/", None, None, 200),  # the console's files hold no data: its calls send the key
    ("GET", "/console/js/app.js", None, None, 200),
    ("GET", "/v1/batches", None, EMBEDDER, 200),
    ("GET", "/v1/batches", None, READER, "embed"),
    ("POST", "/v1/batches", {}, TEAM_A, 422),
    ("POST", "/v1/batches/batch_x/cancel", None, READER, "embed"),
    ("GET", "/v1/files/file-x", None, EMBEDDER, 404),
    ("GET", "/v1/files/file-x/content", None, READER, "embed"),
    ("GET", "/v1/no-such-route", None, EMBEDDER, 404),
    ("GET", "/v1/no-such-route", None, None, 401),
    ("GET", "/health", None, None, 200),
    ("GET", "/metrics", None, None, 200),
]


@pytest.fixture()
def service_log():
    """What the app writes to Serve's logger (in a replica, its log file)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("ray.serve")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.slow  # Milvus Lite
def test_each_route_answers_each_key_as_its_scopes_say_and_every_denial_is_logged_by_name(app, service_log):
    names = {ADMIN: "api_keys.0", READER: "search-ui", TEAM_A: "team-a", EMBEDDER: "embedder"}
    for method, path, body, key, expected in CASES:
        service_log.clear()
        response = asyncio.run(send(app, key, method, path, body))
        status = 403 if isinstance(expected, str) else expected
        assert response.status_code == status, (method, path, names.get(key, key), response.text)
        records = [json.loads(record.getMessage()) for record in service_log]  # the audit trail's alone
        if status not in (401, 403):
            assert not [record for record in records if record["outcome"].startswith("denied")]
            continue
        error = response.json()["error"]
        (record,) = records
        assert (record["method"], record["path"], record["outcome"]) == (method, path, f"denied {status}")
        assert key is None or (key not in service_log[0].getMessage() and key not in response.text)
        if status == 401:
            assert error["code"] == "invalid_api_key" and record["key"] == "unknown"
            continue
        assert (error["code"], record["key"], record["scope"]) == ("insufficient_scope", names[key], expected)
        assert error["message"] == f"this key ({names[key]}) lacks scope {expected}"
        assert (method, record["route"]) in ROUTE_SCOPES


@pytest.mark.slow  # Milvus Lite
def test_lists_show_what_the_key_may_read(app):
    def names(key, path):
        return sorted(item["name"] for item in asyncio.run(send(app, key, "GET", path)).json()["data"])

    assert names(ADMIN, "/v1/collections") == names(READER, "/v1/collections") == ["team_a_docs", "team_b_docs"]
    assert names(TEAM_A, "/v1/collections") == ["team_a_docs"]
    assert names(TEAM_A, "/v1/aliases") == names(READER, "/v1/aliases") == ["team_a_live"]


@pytest.mark.slow  # Milvus Lite
def test_outside_serve_the_app_takes_or_makes_the_request_id_on_every_answer_and_audits_with_it(app, service_log):
    given = asyncio.run(send(app, ADMIN, "GET", "/v1/models", headers={"X-Request-Id": "trace-7"}))
    refused = asyncio.run(send(app, READER, "DELETE", "/v1/collections/team_b_docs", headers={"X-Request-Id": "r-8"}))
    made = [asyncio.run(send(app, key, "GET", "/v1/models", headers=headers)) for key, headers in [
        (ADMIN, {}), (None, {}), (ADMIN, {"X-Request-Id": "x" * 129}), (ADMIN, {"X-Request-Id": "tab\there"})]]
    assert [given.headers["x-request-id"], refused.headers["x-request-id"]] == ["trace-7", "r-8"]
    assert refused.status_code == 403 and json.loads(service_log[-2].getMessage())["request_id"] == "r-8"
    made_ids = [answer.headers["x-request-id"] for answer in made]
    assert all(re.fullmatch("[0-9a-f]{32}", request_id) for request_id in made_ids) and len(set(made_ids)) == 4
    assert json.loads(service_log[-1].getMessage())["request_id"] == made_ids[1]  # the 401's record



@pytest.mark.slow  # Milvus Lite
def test_a_key_learns_its_own_name_and_scopes_and_the_console_is_served_with_no_key(app):
    me = asyncio.run(send(app, READER, "GET", "/v1/keys/me")).json()
    assert me == {"object": "key", "name": "search-ui", "scopes": ["read:*"], "keys_required": True}
    assert asyncio.run(send(app, TEAM_A, "GET", "/v1/keys/me")).json()["scopes"] == [
        "embed", "read:team_a_*", "write:team_a_*"]
    page = asyncio.run(send(app, None, "GET", "/console/"))
    assert page.headers["content-type"].startswith("text/html") and b'type="module"' in page.content
    for outside in ("/console/../pyproject.toml", "/console/%2e%2e/deployments/http.py", "/console/js/nothing.js",
                    "/console/index.py"):
        assert asyncio.run(send(app, None, "GET", outside)).status_code in (401, 404), outside
