"""Batch jobs on the session's Ray: outputs, codecs, bad rows, formats, resuming, and parity with the service."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from rayprism.jobs.embed import execute, plan
from rayprism.platform.codecs.quantize import from_int8, ranges_from_json
from rayprism.platform.config import JobConfig
from tests.conftest import cosines
from tests.integration.conftest import SAMPLE_FIELDS, actor_pids

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = [json.loads(line) for line in (DATA / "debian-sample.jsonl").read_text().splitlines()]
QUERIES = [json.loads(line) for line in (DATA / "debian-sample-queries.jsonl").read_text().splitlines()]


def job_config(tmp_path: Path, source: Path, **overrides) -> JobConfig:
    base = {
        "input": {"path": str(source)},
        "model": {"name": "minilm"},
        "compute": {"num_cpus": 0.5, "torch_threads": 2, "rows_per_part": 40},
        "codecs": ["float32", "float16", "binary", "int8", {"matryoshka": [128, 64]}],
        "output": {"parquet": str(tmp_path / "out")},
        "int8_calibration_rows": 100,
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return JobConfig.model_validate(base)


def read_parts(directory: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(part) for part in sorted(directory.glob("part-*.parquet")))


def matrix(table: pa.Table, column: str, dtype) -> np.ndarray:
    return np.array(table[column].to_pylist(), dtype=dtype)


@pytest.fixture(scope="module")
def finished_job(ray_session, tmp_path_factory):
    directory = tmp_path_factory.mktemp("job")
    source = directory / "corpus.jsonl"
    lines = [json.dumps(row) for row in SAMPLE]
    lines.insert(10, "{oops")
    lines.insert(20, json.dumps({"id": "no-text", "text": "   "}))
    lines.insert(30, json.dumps({"text": "no id here"}))
    source.write_text("\n".join(lines) + "\n")
    job = job_config(directory, source)
    reported = []
    summary = execute(plan(job), on_unit=reported.append)
    return job, summary, directory, reported


def test_every_good_row_is_written_once_and_bad_rows_are_reported(finished_job):
    job, summary, directory, reported = finished_job
    assert (summary.rows, summary.errors, summary.units, summary.units_run) == (len(SAMPLE), 3, 4, 4)
    # the progress heard of every unit once, and its counts add up to what the state directory recorded
    assert sorted(done.unit for done in reported) == sorted(unit.id for unit in plan(job).units)
    assert (sum(done.rows for done in reported), sum(done.errors for done in reported)) == (len(SAMPLE), 3)
    table = read_parts(directory / "out")
    assert sorted(table["id"].to_pylist()) == sorted(row["id"] for row in SAMPLE)
    assert set(table.column_names) == {"id", "text", "package", "section", "priority", "installed_size", "float32",
                                       "float16", "binary", "int8", "matryoshka_128", "matryoshka_64"}
    errors = [json.loads(line) for line in Path(summary.errors_file).read_text().splitlines()]
    assert [(e["row"], e["reason"].split(":")[0]) for e in errors] == [
        (10, "not JSON"), (20, "field 'text' must be a non-empty string"), (30, "missing id field 'id'"),
    ]
    assert errors[1]["id"] == "no-text"
    assert Path(summary.errors_file).name == "_errors.jsonl"
    assert len(list((directory / "out" / "_errors").iterdir())) == 1  # only the unit that had bad rows


def test_the_output_folder_is_a_dataset(finished_job):
    """Sidecar files start with `_`, which dataset readers skip: the folder reads as one table."""
    _, summary, directory, _ = finished_job
    dataset = pq.read_table(directory / "out")
    assert dataset.num_rows == summary.rows == read_parts(directory / "out").num_rows


def test_vectors_equal_the_services(finished_job, service_url):
    _, _, directory, _ = finished_job
    table = read_parts(directory / "out")
    texts = table["text"].to_pylist()[:24]
    response = httpx.post(f"{service_url}/v1/embeddings", json={"model": "minilm", "input": texts}, timeout=120)
    served = np.array([item["embedding"] for item in response.json()["data"]])
    assert cosines(matrix(table, "float32", np.float32)[:24], served).min() >= 0.99999


def test_codecs(finished_job):
    _, _, directory, _ = finished_job
    table = read_parts(directory / "out")
    vectors = matrix(table, "float32", np.float32)
    np.testing.assert_array_equal(matrix(table, "binary", np.uint8), np.packbits(vectors > 0, axis=1))
    np.testing.assert_allclose(matrix(table, "float16", np.float32), vectors, atol=1e-3)
    ranges = ranges_from_json((directory / "out" / "_int8_ranges.json").read_bytes())
    bucket = (ranges[1] - ranges[0]) / 255
    inside = (vectors >= ranges[0]) & (vectors <= ranges[1])
    error = np.abs(from_int8(matrix(table, "int8", np.int8), ranges) - vectors)
    assert np.all(error[inside] <= np.broadcast_to(bucket / 2 + 1e-6, error.shape)[inside])
    assert inside.mean() > 0.95  # calibrated on 100 of the rows, most values fall inside
    for dim in (128, 64):
        short = matrix(table, f"matryoshka_{dim}", np.float32)
        np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-5)
        assert cosines(short, vectors[:, :dim]).min() >= 0.99999


def test_rerunning_a_finished_job_does_no_work(finished_job):
    job, _, directory, _ = finished_job
    parts = {p: p.stat().st_mtime_ns for p in (directory / "out").glob("part-*.parquet")}
    again = plan(job)
    assert again.todo == [] and again.state.totals() == (len(SAMPLE), 3)
    assert {p: p.stat().st_mtime_ns for p in (directory / "out").glob("part-*.parquet")} == parts


def test_a_changed_job_refuses_the_old_progress(finished_job):
    job, _, _, _ = finished_job
    from rayprism.platform.errors import ConfigError

    with pytest.raises(ConfigError, match="different job \\(changed: codecs\\)"):
        plan(job.model_copy(update={"codecs": ["float32"]}))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_parquet_and_csv_inputs(ray_session, tmp_path, fmt, tiny_model_path):
    rows = [{"doc": f"r{i}", "body": f"row number {i} about {'cats' if i % 2 else 'dogs'}", "n": i} for i in range(30)]
    source = tmp_path / f"input.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), source)
    else:
        pa_csv.write_csv(pa.Table.from_pylist(rows), source)
    job = job_config(tmp_path, source, input={"id_field": "doc", "text_field": "body"}, codecs=["float32"],
                     model={"name": "tiny", "source": tiny_model_path})
    summary = execute(plan(job))
    assert (summary.rows, summary.errors) == (30, 0)
    table = read_parts(tmp_path / "out")
    assert sorted(table["id"].to_pylist()) == sorted(r["doc"] for r in rows)
    assert table["body"].to_pylist()[0].startswith("row number")
    assert matrix(table, "float32", np.float32).shape == (30, 16)


def test_ids_derived_from_file_and_row_are_stable(ray_session, tmp_path, tiny_model_path):
    source = tmp_path / "noids.jsonl"
    source.write_text("\n".join(json.dumps({"text": f"line {i}"}) for i in range(5)) + "\n")
    job = job_config(tmp_path, source, input={"id_field": None}, codecs=["float32"],
                     model={"name": "tiny", "source": tiny_model_path})
    execute(plan(job))
    assert sorted(read_parts(tmp_path / "out")["id"].to_pylist()) == [f"noids.jsonl:{i}" for i in range(5)]


def test_on_error_fail_stops_at_the_first_bad_row(ray_session, tmp_path, tiny_model_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"id": 1, "text": "fine"}) + "\n" + json.dumps({"id": 2, "text": 5}) + "\n")
    job = job_config(tmp_path, source, on_error="fail", codecs=["float32"], model={"name": "tiny", "source": tiny_model_path})
    from rayprism.platform.errors import RayprismError

    with pytest.raises(RayprismError, match="row 1 \\(id 2\\): field 'text' must be a non-empty string"):
        execute(plan(job))


UNIT_WORKER = "MapWorker(MapBatches(UnitWorker))"
"""The class name Ray Data gives the encoder actors of a job."""
RAY_LINES = ("core_worker", "streaming_executor", "logging_progress", "Dataset dataset_", "INFO", "WARNING")
"""Fragments of what Ray and Ray Data print on their own: none belongs in `rayprism embed`'s output."""


def test_embed_shows_the_jobs_own_progress_and_keeps_rays_logs_in_its_files(ray_session, tmp_path, tiny_model_path):
    import ray

    rows = 300
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"document {i} about packages"}) + "\n" for i in range(rows))
                      + "{oops\n")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps({
        "input": {"path": "docs.jsonl"}, "model": {"name": "tiny", "source": tiny_model_path},
        "compute": {"num_cpus": 0.5, "torch_threads": 1, "rows_per_part": 50}, "output": {"parquet": "out"},
    }))
    ray_data_log = Path(ray._private.worker._global_node.get_logs_dir_path()) / "ray-data" / "ray-data.log"
    finished_before = ray_data_log.read_text().count("execution finished") if ray_data_log.exists() else 0
    result = subprocess.run(
        [sys.executable, "-m", "rayprism.cli", "embed", str(job_file), "--address", ray.get_runtime_context().gcs_address],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert not [line for line in output.splitlines() if any(fragment in line for fragment in RAY_LINES)], output
    written = sum(pq.read_metadata(part).num_rows for part in (tmp_path / "out").glob("part-*.parquet"))
    rejected = len((tmp_path / "out" / "_errors.jsonl").read_text().splitlines())
    assert (written, rejected) == (rows, 1)
    lines = [line for line in result.stdout.splitlines() if not re.match(r"\d+/7 units, \d+ rows \(", line)]
    assert lines[0] == f"7 of 7 units to run; progress in {tmp_path / 'out'}"
    assert re.fullmatch(rf"embedded {written} rows in [\d.]+ s \([\d.]+ rows/s\), rejected {rejected}; "
                        rf"all runs: {written} rows, {rejected} rejected", lines[1]), lines[1]
    assert lines[2:] == [f"  output: {tmp_path / 'out'}", f"  rejected rows: {tmp_path / 'out' / '_errors.jsonl'}"]
    assert ray_data_log.read_text().count("execution finished") == finished_before + 1  # Ray Data's own lines: here


def test_a_lost_encoder_worker_costs_a_redo_of_its_units_only(ray_session, tmp_path):
    """An encoder actor killed mid-job is not restarted by Ray (the job runs them with max_restarts=0):
    the job runs the units it left unfinished on a fresh actor, and every row is written once."""
    documents = [{**row, "id": f"{copy}-{row['id']}"} for copy in range(3) for row in SAMPLE]
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in documents))
    job = job_config(tmp_path, source, codecs=["float32"], compute={"rows_per_part": 120, "max_actors": 1})
    earlier = set(actor_pids(UNIT_WORKER))  # another job's actors, were any still alive, are not this one
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.append(_kill_after_first_unit(tmp_path / "out" / "_done", earlier)), daemon=True)
    killer.start()
    summary = execute(plan(job))
    killer.join(timeout=10)
    assert killed and summary.worker_deaths == 1
    ids = read_parts(tmp_path / "out")["id"].to_pylist()
    assert len(ids) == len(set(ids)) == summary.rows == len(documents)


def _kill_after_first_unit(done_dir: Path, earlier: set[int], timeout_s: float = 300) -> int:
    """SIGKILL the job's encoder actor as soon as it records its first unit: it is then busy with the
    next one (seconds of MiniLM on 120 rows), whatever the driver has heard so far. Returns its pid."""
    deadline = time.monotonic() + timeout_s
    pids: list[int] = []
    while time.monotonic() < deadline:
        pids = pids or [pid for pid in actor_pids(UNIT_WORKER) if pid not in earlier]
        if pids and any(done_dir.glob("*.json")):
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"no {UNIT_WORKER} actor finished a unit in {timeout_s} s")


def store_count(uri: Path, name: str) -> int:
    from rayprism.platform.store.milvus import MilvusStore

    store = MilvusStore(str(uri))
    try:
        return store.count(name)
    finally:
        store.close()


def test_an_interrupted_job_resumes_without_duplicates(ray_session, tmp_path):
    import ray

    source = tmp_path / "corpus.jsonl"
    source.write_text("\n".join(json.dumps(row) for row in SAMPLE) + "\n")
    uri = tmp_path / "job.db"
    job = {
        "input": {"path": str(source)},
        "compute": {"num_cpus": 0.5, "torch_threads": 2, "rows_per_part": 10, "batch_size": 16},
        "codecs": ["float32"],
        "output": {"parquet": str(tmp_path / "out"), "collection": "jobdocs", "uri": str(uri)},
    }
    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps(job))
    command = [sys.executable, "-m", "rayprism.cli", "embed", str(job_file),
               "--address", ray.get_runtime_context().gcs_address]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done_dir = tmp_path / "out" / "_done"
    deadline = time.monotonic() + 300
    while len(list(done_dir.glob("*.json"))) < 3 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    finished_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*.parquet")
                       if (done_dir / f"{p.stem.removeprefix('part-')}.json").exists()}
    assert 3 <= len(finished_before) < 12, "the driver was not killed mid-job"

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "of 12 units to run" in result.stdout
    table = read_parts(tmp_path / "out")
    ids = table["id"].to_pylist()
    assert len(ids) == len(set(ids)) == len(SAMPLE)
    for name, mtime in finished_before.items():  # finished units were not redone
        assert (tmp_path / "out" / name).stat().st_mtime_ns == mtime
    assert store_count(uri, "jobdocs") == len(SAMPLE)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert "nothing to do: all 12 units are done" in again.stdout


def test_job_into_a_running_services_collection_searches_like_the_api(ray_session, service_url, tmp_path):
    """Same documents, one collection filled by `rayprism embed` through the running service (vectors
    sent with the documents, searchable at once, no restart), one through the documents API."""
    documents = [{key: row[key] for key in ("id", "text", *SAMPLE_FIELDS)} for row in SAMPLE]
    source = tmp_path / "corpus.jsonl"
    source.write_text("\n".join(json.dumps(d) for d in documents) + "\n")
    spec = {"name": "debian_job", "model": "minilm", "fields": SAMPLE_FIELDS}
    job = JobConfig.model_validate({
        "input": {"path": str(source)},
        "compute": {"num_cpus": 0.5, "torch_threads": 2, "rows_per_part": 50},
        "output": {"collection": spec, "service_url": service_url, "state_dir": str(tmp_path / "state")},
    })
    assert execute(plan(job)).collection_count == len(documents)
    described = httpx.get(f"{service_url}/v1/collections/debian_job", timeout=60).json()
    assert described["count"] == len(documents)

    api_spec = {**spec, "name": "debian_api"}
    assert httpx.post(f"{service_url}/v1/collections", json=api_spec, timeout=60).status_code in (200, 201)
    upserted = httpx.post(f"{service_url}/v1/collections/debian_api/documents", json={"documents": documents}, timeout=300)
    assert upserted.status_code == 200, upserted.text

    time.sleep(1)  # let the API-written rows be sealed like the job's
    for query in QUERIES:
        for mode in ("dense", "sparse", "hybrid"):
            body = {"query": query["query"], "k": 10, "mode": mode}
            via_job = httpx.post(f"{service_url}/v1/collections/debian_job/search", json=body, timeout=60).json()
            via_api = httpx.post(f"{service_url}/v1/collections/debian_api/search", json=body, timeout=60).json()
            assert [h["id"] for h in via_job["results"]] == [h["id"] for h in via_api["results"]], (query, mode)
