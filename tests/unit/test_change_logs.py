"""The store's change logs and job records: what a re-embedding replays, and what survives a restart."""

import asyncio
import json

import numpy as np
import pytest
from pydantic import ValidationError

from rayprism.platform.bridge import BridgeQuality
from rayprism.platform.errors import NotFoundError
from rayprism.platform.reembed_record import BridgeAgreement, BridgeReport, ReembedRecord
from rayprism.platform.store.changes import ChangeLogs, JobRecords


def record(job_id: str, **fields) -> ReembedRecord:
    given = {"alias": "docs", "source": "docs_v1", "target": "docs_v2", "model": "new", "source_model": "old",
             "direction": "forward", "batch_size": 8, "worker": "w"}
    return ReembedRecord(id=job_id, **{**given, **fields})


def test_a_log_records_only_while_open_and_reads_back_after_a_restart(tmp_path):
    logs = ChangeLogs(tmp_path)
    logs.record("docs", ["a"])  # no log open: nothing is kept
    logs.open("docs")
    logs.record("docs", ["a", "b"])
    logs.record("docs", ["b"])
    logs.record("docs", ["c"])
    assert logs.position("docs") == 3
    assert logs.since("docs", 0, limit=10) == (3, ["a", "b", "c"])  # each id once
    assert logs.since("docs", 1, limit=10) == (3, ["b", "c"])
    assert logs.since("docs", 0, limit=2) == (1, ["a", "b"])  # whole writes only, up to the limit
    assert logs.since("docs", 3, limit=10) == (3, [])

    reopened = ChangeLogs(tmp_path)
    assert reopened.is_open("docs") and reopened.since("docs", 0, limit=10) == (3, ["a", "b", "c"])
    reopened.close("docs")
    assert not ChangeLogs(tmp_path).is_open("docs")


def test_a_line_cut_short_by_a_crash_is_not_read(tmp_path):
    logs = ChangeLogs(tmp_path)
    logs.open("docs")
    logs.record("docs", [1, 2])
    with (tmp_path / "changes" / "docs.jsonl").open("a") as out:
        out.write('[3, 4')
    assert ChangeLogs(tmp_path).since("docs", 0, limit=10) == (1, [1, 2])


def test_job_records_are_replaced_whole_and_unknown_ids_are_not_paths(tmp_path):
    jobs = JobRecords(tmp_path)
    jobs.put(record("docs-1", created=2.0))
    jobs.put(record("docs-1", created=2.0, state="done"))
    jobs.put(record("docs-2", created=1.0))
    assert jobs.get("docs-1") == record("docs-1", created=2.0, state="done")
    assert [job.id for job in jobs.all()] == ["docs-2", "docs-1"]  # oldest first
    assert jobs.get("../jobs/docs-1") is None and jobs.get("nope") is None


def test_a_record_written_before_it_was_typed_still_loads(tmp_path):
    """The on-disk JSON keeps the record's keys: a job recorded as a dict (``object`` included) reads back."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "docs-1.json").write_text(json.dumps({
        "object": "reembed.job", "id": "docs-1", "alias": "docs", "source": "docs_v1", "target": "docs_v2",
        "model": "new", "source_model": "old", "direction": "rollback", "state": "running", "phase": "following",
        "created": 1.0, "updated": 2.0, "documents_total": None, "documents_done": 0, "documents_embedded": 3,
        "embedded_this_run": 0, "changes_start": 0, "changes_applied": 2, "evaluation": {}, "gate": None,
        "bridge": None, "error": None, "batch_size": 8, "runs": 1, "worker": "w", "rolls_back": "docs-0"}))
    loaded = JobRecords(tmp_path).get("docs-1")
    assert (loaded.direction, loaded.phase, loaded.changes_applied, loaded.rolls_back) == (
        "rollback", "following", 2, "docs-0")
    assert loaded.evaluation.queries is None and loaded.updated == 2.0


def test_a_record_refuses_a_change_it_cannot_hold():
    """What the worker sets through the store is checked where it is set, not three hops later."""
    job = record("docs-1")
    assert job.phase == "copying" and job.updated == job.created  # a forward job copies first
    assert record("docs-1", direction="rollback").phase == "following"
    with pytest.raises(ValidationError):
        job.state = "finished"
    with pytest.raises(ValueError):
        job.documents_finished = 3


def test_a_bridge_is_kept_beside_its_record_with_the_ids_it_was_fitted_on(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    jobs = JobRecords(tmp_path)
    assert jobs.bridge("docs-1") is None
    jobs.put_bridge("docs-1", matrix, ["a", 2, "c"])
    saved, fit_ids = JobRecords(tmp_path).bridge("docs-1")
    assert np.array_equal(saved, matrix) and fit_ids == ["a", 2, "c"]
    assert jobs.all() == [] and jobs.bridge("../docs-1") is None  # not a record; ids are not paths


@pytest.mark.slow  # opens Milvus Lite (aliases)
def test_the_store_answers_a_jobs_bridge_until_it_ends_and_after_a_restart(tmp_path):
    from rayprism.deployments.store import StoreReplica
    from rayprism.platform.config import StoreConfig

    def replica():
        return StoreReplica(StoreConfig(uri=str(tmp_path / "store.db")).model_dump(), [])

    store = replica()
    asyncio.run(store.reembed_begin(record("docs-1")))
    assert asyncio.run(store.reembed_bridge("docs_v1", "new")) is None  # no bridge fitted yet
    quality = BridgeReport(method="procrustes", fit_rows=3, against_old=BridgeQuality(0.9, 0.8, 1),
                           against_new=BridgeAgreement(top10_agreement=0.7, rows=1))
    asyncio.run(store.reembed_bridge_put("docs-1", np.eye(4), ["a", "b", "c"], quality))
    assert asyncio.run(store.reembed_bridge("docs_v1", "new")) == "docs-1"
    assert asyncio.run(store.reembed_bridge("docs_v1", "other")) is None
    assert asyncio.run(store.reembed_job("docs-1")).bridge == quality
    saved = asyncio.run(store.reembed_bridge_matrix("docs-1"))
    assert np.array_equal(saved["matrix"], np.eye(4)) and saved["fit_ids"] == ["a", "b", "c"]
    store.close()

    store = replica()  # a restarted store finds the running job's bridge again
    assert asyncio.run(store.reembed_bridge("docs_v1", "new")) == "docs-1"
    asyncio.run(store.reembed_update("docs-1", state="refused", phase="evaluated"))
    assert asyncio.run(store.reembed_jobs())[0].phase == "evaluated"
    assert asyncio.run(store.reembed_bridge("docs_v1", "new")) is None
    with pytest.raises(NotFoundError):
        asyncio.run(store.reembed_bridge_matrix("docs-9"))
    store.close()


@pytest.mark.slow  # opens Milvus Lite
def test_the_served_store_answers_a_callers_mistake_and_raises_its_own_faults(tmp_path):
    """The class Serve runs: a 404 comes back as a value (Serve would log a raised one with its traceback), from
    every job method too (none may get another's answer in place of its exception); a fault of ours still raises."""
    from rayprism.deployments.store_client import CallerMistake, StoreDeployment
    from rayprism.platform.config import StoreConfig

    store = StoreDeployment.func_or_class(StoreConfig(uri=str(tmp_path / "store.db")).model_dump(), [])
    calls = [store.resolve("nowhere"), store.reembed_job("no-job"), store.reembed_update("no-job", runs=1),
             store.reembed_changes("no-job", 0, 10), store.reembed_freeze("no-job", 1.0), store.reembed_thaw("no-job"),
             store.reembed_bridge_put("no-job", np.eye(2), [], None), store.reembed_bridge_matrix("no-job"),
             store.reembed_swap("no-job", 0)]
    for call in calls:
        answer = asyncio.run(call)
        assert isinstance(answer, CallerMistake) and isinstance(answer.error, NotFoundError), (call, answer)
    with pytest.raises(KeyError):  # the serving replica always sends ids: a row without one is our bug
        asyncio.run(store.upsert("docs", [{"text": "no id"}]))
    store.close()
