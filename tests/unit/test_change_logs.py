"""The store's change logs and job records: what a re-embedding replays, and what survives a restart."""

from rayprism.platform.store.changes import ChangeLogs, JobRecords


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
    jobs.put({"id": "docs-1", "created": 2.0, "state": "running"})
    jobs.put({"id": "docs-1", "created": 2.0, "state": "done"})
    jobs.put({"id": "docs-2", "created": 1.0, "state": "running"})
    assert jobs.get("docs-1")["state"] == "done"
    assert [job["id"] for job in jobs.all()] == ["docs-2", "docs-1"]  # oldest first
    assert jobs.get("../jobs/docs-1") is None and jobs.get("nope") is None
