"""The OpenAI Batch API without Ray: its records on disk, line checks, uploads, the lane that puts batch lines
behind online requests, and batch lines answered by the online route's own code."""

import asyncio
import base64
import json

import numpy as np
import orjson
import pytest
from openai.types import Batch as OpenAIBatch
from openai.types import FileDeleted as OpenAIFileDeleted
from openai.types import FileObject as OpenAIFileObject

from rayprism.deployments.background import BackgroundLane
from rayprism.deployments.batch_routes import form_fields
from rayprism.deployments.service import EmbeddingService
from rayprism.platform.api.requests import EmbeddingRequest
from rayprism.platform.batches import (
    BatchRequest,
    BatchStore,
    answered_line,
    check_upload,
    refused_line,
    request_of,
)
from rayprism.platform.config import BatchesConfig, ModelConfig, ServeConfig
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError


def line(custom_id="a", **body):
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body or {"input": "x"}}


def test_request_lines_are_checked_one_by_one():
    assert request_of(line("c1", input="hi"), None) == ("c1", {"input": "hi"})
    assert request_of(None, "not JSON: Expecting value at column 1") == "not JSON: Expecting value at column 1"
    assert "custom_id" in request_of({**line(), "custom_id": ""}, None)
    assert "method must be POST" in request_of({**line(), "method": "GET"}, None)
    assert "url must be /v1/embeddings" in request_of({**line(), "url": "/v1/chat/completions"}, None)
    assert "body must be a JSON object" in request_of({**line(), "body": "x"}, None)
    assert "unknown fields ['extra']" in request_of({**line(), "extra": 1}, None)


def test_output_and_error_lines_have_openai_shapes():
    answered = answered_line("c1", 200, {"object": "list"})
    assert answered["id"].startswith("batch_req_") and answered["custom_id"] == "c1" and answered["error"] is None
    assert answered["response"]["status_code"] == 200 and answered["response"]["body"] == {"object": "list"}
    refused = refused_line(None, 4, "not JSON")
    assert refused["response"] is None and refused["custom_id"] is None
    assert refused["error"] == {"code": "invalid_request", "message": "line 5: not JSON", "line": 5}


def test_records_fit_the_openai_clients_models(tmp_path):
    store = BatchStore(tmp_path)
    uploaded = store.files.add("in.jsonl", "batch", b'{"custom_id": "a"}\n')
    OpenAIFileObject.model_validate(uploaded.model_dump())
    batch = store.create(BatchRequest(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h",
                                      metadata={"run": "1"}))
    parsed = OpenAIBatch.model_validate(batch.model_dump())
    assert parsed.status == "validating" and parsed.expires_at == parsed.created_at + 86400
    assert store.files.content_path(uploaded.id).read_bytes() == b'{"custom_id": "a"}\n'


def test_cancel_shows_cancelling_until_the_job_ends_it(tmp_path):
    store = BatchStore(tmp_path)
    batch = store.create(BatchRequest(input_file_id=store.files.add("f", "batch", b"{}\n").id,
                                      endpoint="/v1/embeddings", completion_window="24h"))
    cancelled = store.cancel(batch.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at is not None
    assert store.stored(batch.id).status == "validating"  # the record is the job's to change
    assert store.unfinished() == [batch.id]
    store.save(store.stored(batch.id).model_copy(update={"status": "cancelled"}))
    assert store.get(batch.id).status == "cancelled" and store.unfinished() == []
    assert store.cancel(batch.id).status == "cancelled"  # an ended batch stays as it ended


def test_pages_list_newest_first(tmp_path):
    store = BatchStore(tmp_path)
    source = store.files.add("f", "batch", b"{}\n").id
    ids = []
    for created in range(5):
        batch = store.create(BatchRequest(input_file_id=source, endpoint="/v1/embeddings", completion_window="24h"))
        store.save(batch.model_copy(update={"created_at": 1000 + created}))
        ids.append(batch.id)
    first = store.page(2, None)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more and first.last_id == ids[3]
    rest = store.page(10, first.last_id)
    assert [b.id for b in rest.data] == ids[::-1][2:] and not rest.has_more
    with pytest.raises(NotFoundError, match="after"):
        store.page(2, "batch_" + "0" * 24)


def test_unknown_and_malformed_ids_are_404_not_paths(tmp_path):
    store = BatchStore(tmp_path)
    for bad in ("../../etc/passwd", "file-" + "0" * 24):
        with pytest.raises(NotFoundError):
            store.files.get(bad)
    with pytest.raises(NotFoundError):
        store.get("batch_../x")


def test_uploads_are_checked_with_clear_errors():
    check_upload(b'{"a": 1}\n\n{"b": 2}\n', "batch", max_bytes=100, max_lines=2)
    with pytest.raises(InvalidInputError, match="purpose must be 'batch'"):
        check_upload(b"{}\n", "fine-tune", max_bytes=100, max_lines=2)
    with pytest.raises(PayloadTooLargeError, match=r"batches.max_file_bytes \(4\)"):
        check_upload(b"{}\n{}\n", "batch", max_bytes=4, max_lines=2)
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        check_upload(b"\xff\xfe{}", "batch", max_bytes=100, max_lines=2)
    with pytest.raises(InvalidInputError, match=r"3 request lines, more than batches.max_lines \(2\)"):
        check_upload(b"{}\n{}\n{}\n", "batch", max_bytes=100, max_lines=2)
    with pytest.raises(InvalidInputError, match="no request lines"):
        check_upload(b"\n \n", "batch", max_bytes=100, max_lines=2)


def test_multipart_forms_are_read_as_the_openai_client_sends_them():
    import httpx

    request = httpx.Request("POST", "http://x/v1/files", data={"purpose": "batch"},
                            files={"file": ("in.jsonl", b'{"custom_id": "a"}\n', "application/octet-stream")})
    fields = form_fields(request.headers["content-type"], request.read())
    assert fields["file"] == ("in.jsonl", b'{"custom_id": "a"}\n') and fields["purpose"][1] == b"batch"
    with pytest.raises(InvalidInputError, match="multipart/form-data"):
        form_fields("application/json", b"{}")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_lane_holds_batch_lines_behind_online_requests():
    clock = Clock()
    lane = BackgroundLane(BatchesConfig(background_inputs=8, busy_inputs=2, online_gap_s=0.05, quiet_s=1.0), clock)
    assert lane.share() == 8 and lane.may_enter(8)
    with lane.online():
        assert lane.share() == 0 and not lane.may_enter(1)  # nothing enters while an online request runs
    assert lane.share() == 0  # nor right after it: online requests back to back pause the batch
    clock.now += 0.06
    assert lane.share() == 2  # in a gap between them: a small share
    lane.background_inputs = 2
    assert not lane.may_enter(1)
    lane.background_inputs = 0
    assert lane.may_enter(50)  # a line larger than the share still runs, alone
    clock.now += 0.94
    assert lane.share() == 8  # quiet again: the full share


async def test_a_held_line_enters_once_the_online_request_ends():
    lane = BackgroundLane(BatchesConfig(quiet_s=0.0, online_gap_s=0.0))
    entered = asyncio.Event()

    async def batch_line():
        await lane.admit(3)
        entered.set()

    with lane.online():
        waiting = asyncio.create_task(batch_line())
        await asyncio.sleep(0.02)
        assert not entered.is_set()
    await asyncio.wait_for(entered.wait(), 2)
    assert lane.background_inputs == 3
    lane.release(3)
    await waiting


@pytest.fixture(scope="module")
def service(tiny_model_path):
    service = EmbeddingService(ServeConfig(models=[ModelConfig(name="tiny", source=tiny_model_path)]))
    assert service.wait_loaded(120)
    yield service
    service.close()


def vector_of(embedding) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype=np.float32)
    return np.asarray(orjson.loads(orjson.dumps(embedding, option=orjson.OPT_SERIALIZE_NUMPY)), dtype=np.float64)


def test_batch_lines_answer_as_the_online_route(service):
    bodies = [{"input": ["alpha", "beta"]}, {"input": "gamma", "dimensions": 8, "encoding_format": "base64"},
              {"input": "delta", "output_dtype": "binary"}, {"input": "x", "model": "nope"}, {"input": []},
              {"input": "x", "unknown": 1}]
    answers = asyncio.run(service.batch_lines(bodies))
    for body, (status, answer) in zip(bodies[:3], answers[:3]):
        online = asyncio.run(service.create_embeddings(EmbeddingRequest.model_validate(body)))
        assert status == 200
        for got, want in zip(answer["data"], online["data"]):  # batched with other lines: equal up to float noise
            got, want = vector_of(got["embedding"]), vector_of(want["embedding"])
            assert got.shape == want.shape and got.dtype == want.dtype
            assert np.dot(got, want) / (np.linalg.norm(got) * np.linalg.norm(want)) >= 0.9999
        assert answer["usage"] == online["usage"] and answer["model"] == "tiny"
    assert [status for status, _ in answers[3:]] == [404, 422, 422]
    assert answers[5][1]["error"]["param"] == "unknown"
    assert service.lane.background_inputs == 0
    vectors = np.array(answers[0][1]["data"][0]["embedding"])
    assert vectors.shape == (service.runner("tiny").encoder.dimensions,)
    json.dumps(answers[3][1])  # errors are plain JSON


def test_batch_lines_enter_shortest_first_and_answer_in_their_own_order(service, monkeypatch):
    """Lines of like length share forward passes (less padding): they enter by length, whatever their order."""
    texts = [" ".join(["word"] * count) for count in (40, 3, 25, 1, 12)]
    entered: list[int] = []
    online = service.create_embeddings

    async def create_embeddings(request):
        entered.append(len(request.input[0].split()))
        return await online(request)

    monkeypatch.setattr(service, "create_embeddings", create_embeddings)
    answers = asyncio.run(service.batch_lines([{"input": text} for text in texts]))
    assert entered == [1, 3, 12, 25, 40]
    assert [answer["usage"]["prompt_tokens"] for _, answer in answers] == [count + 2 for count in (40, 3, 25, 1, 12)]


def test_repeated_custom_ids_are_found_before_the_units_run(tmp_path):
    from rayprism.jobs.batches import repeated_custom_ids

    source = tmp_path / "in.jsonl"
    source.write_text('{"custom_id": "a"}\n\n{not json\n{"custom_id": "b"}\n{"custom_id": "a"}\n[1]\n')
    assert repeated_custom_ids(source) == (5, frozenset({4}))  # blank lines are no requests; rows count from 0


def test_files_list_in_either_order_by_purpose_and_page(tmp_path):
    store = BatchStore(tmp_path)
    made = []
    for created, purpose in enumerate(["batch", "batch_output", "batch", "batch"]):
        record = store.files.add(f"f{created}", purpose, b"{}\n")
        meta = store.files.directory / f"{record.id}.json"
        meta.write_bytes(record.model_copy(update={"created_at": 1000 + created}).model_dump_json().encode())
        made.append(record.id)
    assert [f.id for f in store.files.page(10, None, "asc", None).data] == made
    newest = store.files.page(2, None, "desc", "batch")
    assert [f.id for f in newest.data] == [made[3], made[2]] and newest.has_more
    rest = store.files.page(2, newest.last_id, "desc", "batch")
    assert [f.id for f in rest.data] == [made[0]] and not rest.has_more
    with pytest.raises(NotFoundError, match="after"):
        store.files.page(2, "file-" + "0" * 24, "desc", None)


def test_a_file_is_deleted_unless_an_unfinished_batch_reads_it(tmp_path):
    store = BatchStore(tmp_path)
    source = store.files.add("in", "batch", b"{}\n").id
    batch = store.create(BatchRequest(input_file_id=source, endpoint="/v1/embeddings", completion_window="24h"))
    with pytest.raises(ConflictError, match=batch.id):
        store.delete_file(source)
    assert store.files.content_path(source).read_bytes() == b"{}\n"
    store.save(store.stored(batch.id).model_copy(update={"status": "completed"}))
    deleted = OpenAIFileDeleted.model_validate(store.delete_file(source).model_dump())
    assert deleted.deleted and deleted.id == source
    with pytest.raises(NotFoundError):
        store.files.get(source)
    assert list(store.files.directory.iterdir()) == []
    with pytest.raises(NotFoundError):
        store.delete_file(source)
