"""A batch job into a Milvus server (the embedded 2.3.5 one): every encoder actor writes its own rows, and each
row lands once, as the server itself reads them back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pymilvus import MilvusClient

from rayprism.jobs.embed import execute, plan
from rayprism.platform.config import DENSE_FIELD, JobConfig
from tests.conftest import cosines

SAMPLE = [json.loads(line) for line in (Path(__file__).parents[1] / "data" / "debian-sample.jsonl").read_text().splitlines()]


def done_records(state_dir: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in (state_dir / "_done").glob("*.json")}


def test_workers_write_into_a_server_in_parallel_each_row_once(ray_session, milvus_server_uri, tiny_model_path,
                                                               tmp_path, monkeypatch):
    import ray.data
    from sentence_transformers import SentenceTransformer

    # Ray Data hands units to the first actor up as soon as it is up; a tiny model's 12 units can all be done before
    # the second one has started. Both are waited for (Ray Data's own setting), so both get units.
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 300)

    rows = [{"id": f"{copy}-{row['id']}", "text": row["text"]} for copy in range(2) for row in SAMPLE]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    job = JobConfig.model_validate({
        "input": {"path": str(tmp_path / "corpus.jsonl")},
        "model": {"name": "tiny", "source": tiny_model_path},
        # two actors, on the session's 2 CPUs: 12 units of 20 rows between them
        "compute": {"num_cpus": 0.5, "torch_threads": 1, "min_actors": 2, "max_actors": 2, "rows_per_part": 20},
        "output": {"collection": {"name": "parallel_load", "model": "tiny", "bm25": False},  # 2.3.5 has no BM25
                   "uri": milvus_server_uri, "state_dir": str(tmp_path / "state")},
    })
    summary = execute(plan(job))
    assert summary.rows == len(rows) and summary.errors == 0
    assert summary.collection_count == len(rows)  # the job's own closing count

    records = done_records(tmp_path / "state")
    assert len(records) == 12
    writers = {record["writer"]["pid"] for record in records.values()}
    assert len(writers) >= 2 and os.getpid() not in writers  # more than one process wrote, none of them the driver

    server = MilvusClient(milvus_server_uri)  # the server's own rows, not the job's answer
    try:
        stored = server.query("parallel_load", filter="", output_fields=["id", "text", DENSE_FIELD],
                              limit=10 * len(rows), consistency_level="Strong")
        assert sorted(row["id"] for row in stored) == sorted(row["id"] for row in rows)  # each id once
        texts = {row["id"]: row["text"] for row in rows}
        assert all(row["text"] == texts[row["id"]] for row in stored)
        reference = SentenceTransformer(tiny_model_path, device="cpu").encode([row["text"] for row in stored])
        assert cosines(np.array([row[DENSE_FIELD] for row in stored]), reference).min() >= 0.999

        # Units redone (as after a worker's death) upsert their rows again by id: nothing is added twice.
        redo = sorted(records)[:3]
        for unit in redo:
            (tmp_path / "state" / "_done" / f"{unit}.json").unlink()
        again = execute(plan(job))
        assert again.units_run == 3 and again.rows == 60
        assert again.collection_count == len(rows)
        assert server.query("parallel_load", filter="", output_fields=["count(*)"],
                            consistency_level="Strong")[0]["count(*)"] == len(rows)
        assert all(done_records(tmp_path / "state")[unit]["writer"]["timestamp"] > records[unit]["writer"]["timestamp"]
                   for unit in redo)
    finally:
        server.drop_collection("parallel_load")
        server.close()
