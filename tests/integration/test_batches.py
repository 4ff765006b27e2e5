"""The OpenAI Batch API through `rayprism serve` as a user runs it, driven by the official `openai` client: a batch
completes and each output line matches what /v1/embeddings answers for the same body; malformed lines land in the
error file one by one; cancel; list and paging of batches and files; deleting a file; a service restarted in the middle of a batch finishes it without
embedding again the lines it had done."""

import base64
import io
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from rayprism.platform.batches import UNFINISHED
from tests.integration.conftest import rayprism_serve
from tests.integration.console_browser import chromium, installed_browser, script_errors, wait_for

CONFIG = """\
server: {{audit_log: {folder}/audit.jsonl}}
models:
  - {{name: tiny, source: {model}}}
store: {{uri: {folder}/store.db}}
batches: {{dir: {folder}/batches, lines_per_unit: {lines_per_unit}, workers: 1}}
"""


def write_config(folder: Path, model: str, lines_per_unit: int = 10) -> Path:
    config = folder / "serve.yaml"
    config.write_text(CONFIG.format(folder=folder, model=model, lines_per_unit=lines_per_unit))
    return config


def client_of(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def request_line(custom_id: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}


def jsonl(lines: list) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def submit(client: openai.OpenAI, lines: list, **options):
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h",
                                 **options)


def ended(client: openai.OpenAI, batch_id: str, timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status not in UNFINISHED:
            return batch
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout_s} s: {batch}")


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def vectors(body: dict) -> list[np.ndarray]:
    out = []
    for item in body["data"]:
        embedding = item["embedding"]
        out.append(np.frombuffer(base64.b64decode(embedding), dtype=np.float32) if isinstance(embedding, str)
                   else np.asarray(embedding, dtype=np.float64))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


BODIES = [
    {"input": "the quick brown fox"},
    {"input": ["several", "inputs in one line", "three"], "model": "tiny"},
    {"input": "base64 please", "encoding_format": "base64"},
    {"input": "shorter vectors", "dimensions": 8},
    {"input": "sign bits", "output_dtype": "binary"},
]


def test_a_batch_completes_and_every_line_matches_the_online_answer(own_service):
    url, folder = own_service
    client = client_of(url)
    lines = [request_line(f"line-{n}", **BODIES[n % len(BODIES)]) for n in range(30)]
    created = submit(client, lines, metadata={"purpose": "test"})
    assert created.status == "validating" and created.endpoint == "/v1/embeddings"
    batch = ended(client, created.id)
    assert batch.status == "completed", (batch.errors, batch)
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (30, 30, 0)
    assert batch.metadata == {"purpose": "test"} and batch.error_file_id is None
    assert batch.in_progress_at and batch.completed_at >= batch.in_progress_at
    output = lines_of(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(line["custom_id"] for line in lines)
    bodies = {line["custom_id"]: line["body"] for line in lines}
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200 and line["id"].startswith("batch_req_")
        online = httpx.post(f"{url}/v1/embeddings", json=bodies[line["custom_id"]], timeout=60).json()
        answer = line["response"]["body"]
        assert (answer["object"], answer["model"], answer["usage"]) == (online["object"], online["model"],
                                                                        online["usage"])
        for got, want in zip(vectors(answer), vectors(online), strict=True):
            assert got.shape == want.shape and cosine(got, want) >= 0.9999
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    audit = [json.loads(record) for record in (folder / "audit.jsonl").read_text().splitlines()]
    assert any(record["route"] == "/v1/batches" and record["target"] == created.id and record["outcome"] == "ok"
               for record in audit)


def test_malformed_lines_land_in_the_error_file_one_by_one(own_service):
    url, _ = own_service
    client = client_of(url)
    lines = [request_line("good-1", input="fine"),
             "{not json",
             {"method": "POST", "url": "/v1/embeddings", "body": {"input": "no custom_id"}},
             {**request_line("wrong-url", input="x"), "url": "/v1/chat/completions"},
             request_line("unknown-model", input="x", model="nope"),
             request_line("good-1", input="a repeated custom_id"),
             request_line("good-2", input=["also", "fine"])]
    batch = ended(client, submit(client, lines).id)
    assert batch.status == "completed", (batch.errors, batch)
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (7, 2, 5)
    assert sorted(line["custom_id"] for line in lines_of(client, batch.output_file_id)) == ["good-1", "good-2"]
    errors = lines_of(client, batch.error_file_id)
    refused = {line["error"]["line"]: line for line in errors if line["error"] is not None}
    assert sorted(refused) == [2, 3, 4, 6]
    assert refused[2]["error"]["message"].startswith("line 2: not JSON")
    assert "custom_id" in refused[3]["error"]["message"] and refused[3]["custom_id"] is None
    assert "url must be /v1/embeddings" in refused[4]["error"]["message"]
    assert "earlier line" in refused[6]["error"]["message"]
    answered = [line for line in errors if line["error"] is None]
    assert len(answered) == 1 and answered[0]["custom_id"] == "unknown-model"
    assert answered[0]["response"]["status_code"] == 404
    assert "nope" in answered[0]["response"]["body"]["error"]["message"]


def test_bad_uploads_and_batches_get_clear_errors(own_service):
    url, _ = own_service
    client = client_of(url)
    with pytest.raises(openai.BadRequestError, match="purpose must be 'batch'"):
        client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError, match="no file"):
        client.batches.create(input_file_id="file-" + "0" * 24, endpoint="/v1/embeddings", completion_window="24h")
    uploaded = client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    with pytest.raises(openai.UnprocessableEntityError, match="endpoint"):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_cancel_stops_a_batch_and_keeps_what_it_did(own_service):
    url, _ = own_service
    client = client_of(url)
    batch = submit(client, [request_line(f"c{n}", input=f"line {n}") for n in range(1500)])
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch = ended(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts.completed < 1500
    assert len(lines_of(client, batch.output_file_id)) == batch.request_counts.completed
    assert client.batches.cancel(batch.id).status == "cancelled"  # an ended batch stays as it ended


def test_batches_list_newest_first_and_page(own_service):
    url, _ = own_service
    client = client_of(url)
    made = [submit(client, [request_line("p", input="page")]).id for _ in range(3)]
    for batch_id in made:
        ended(client, batch_id)
    first = client.batches.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    everything = [batch.id for batch in client.batches.list(limit=2)]  # the client follows `after` by itself
    assert set(made) <= set(everything) and len(everything) == len(set(everything))
    created = [client.batches.retrieve(batch_id).created_at for batch_id in everything]
    assert created == sorted(created, reverse=True)
    after = client.batches.list(limit=100, after=first.data[-1].id)
    assert [batch.id for batch in after.data] == everything[2:]


def test_files_list_and_delete_through_the_openai_client(own_service):
    url, _ = own_service
    client = client_of(url)
    batch = ended(client, submit(client, [request_line("d", input="delete me")]).id)
    listed = list(client.files.list())  # the client follows `after` by itself
    assert {batch.input_file_id, batch.output_file_id} <= {record.id for record in listed}
    assert [record.created_at for record in listed] == sorted((record.created_at for record in listed), reverse=True)
    outputs = client.files.list(purpose="batch_output", order="asc")
    assert batch.output_file_id in {record.id for record in outputs} and {r.purpose for r in outputs} == {"batch_output"}

    deleted = client.files.delete(batch.input_file_id)
    assert deleted.deleted and deleted.id == batch.input_file_id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.input_file_id)
    assert batch.input_file_id not in {record.id for record in client.files.list()}
    assert lines_of(client, batch.output_file_id)[0]["custom_id"] == "d"  # the batch's own files stay


@pytest.mark.skipif(installed_browser() is None, reason="needs Debian's chromium and chromium-driver")
def test_the_consoles_jobs_page_lists_a_batch_with_its_lines_and_files(own_service):
    """The console (tests/integration/test_console.py has the rest of it) shows the Batch API's batches."""
    url, _ = own_service
    client = client_of(url)
    batch = ended(client, submit(client, [request_line("c1", input="one"), request_line("c2", input="two"),
                                          "not json"]).id)
    with chromium() as browser:
        browser.get(f"{url}/console/#/jobs")
        row = f"tr[data-batch='{batch.id}']"
        wait_for(browser, lambda d: d.find_elements("css selector", row), 60, "the batch's row")
        assert script_errors(browser) == []
        cells = [cell.text for cell in browser.find_elements("css selector", f"{row} td")]
        assert cells[1] == batch.status == "completed" and cells[2] == "2 / 3 lines · 1 failed", cells
        files = {button.text: button.get_attribute("data-file")
                 for button in browser.find_elements("css selector", f"{row} button[data-file]")}
        assert files == {"output": batch.output_file_id, "errors": batch.error_file_id}


def inputs_embedded(url: str) -> float:
    """The service's count of inputs embedded by the model since it started."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(value) for value in re.findall(r'^rayprism_inputs_total\{[^}]*model="tiny"[^}]*\} (\S+)$',
                                                     text, re.MULTILINE))


def test_a_restarted_service_finishes_a_batch_without_redoing_done_lines(tmp_path, tiny_model_path):
    config = write_config(tmp_path, tiny_model_path, lines_per_unit=5)
    total = 600
    with rayprism_serve(config) as (url, _):
        client = client_of(url)
        batch = submit(client, [request_line(f"r{n}", input=f"restart line {n}") for n in range(total)])
        deadline = time.monotonic() + 120
        while client.batches.retrieve(batch.id).request_counts.completed == 0:
            assert time.monotonic() < deadline, "no line of the batch was done in 120 s"
            time.sleep(0.05)
    job = tmp_path / "batches" / "batches" / batch.id / "job"
    done = {path.name: path.read_bytes() for path in (job / "_done").glob("*.json")}
    done_before = sum(json.loads(record)["rows"] for record in done.values())
    assert 0 < done_before < total, f"the batch must stop in its middle ({done_before} of {total} lines done)"
    with rayprism_serve(config) as (url, _):
        client = client_of(url)
        batch = ended(client, batch.id)
        assert batch.status == "completed", (batch.errors, batch)
        assert (batch.request_counts.completed, batch.request_counts.failed) == (total, 0)
        assert inputs_embedded(url) == total - done_before  # the new service embedded only what was left
        output = lines_of(client, batch.output_file_id)
        assert sorted(line["custom_id"] for line in output) == sorted(f"r{n}" for n in range(total))
    assert all((job / "_done" / name).read_bytes() == record for name, record in done.items())

