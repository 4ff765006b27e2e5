"""What `rayprism embed` shows while it runs, and how `rayprism submit` ships a job file (no Ray, no cluster)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rayprism.cli import app
from rayprism.cli import jobs as job_commands
from rayprism.cli.jobs import EmbedProgress, UnitTally
from rayprism.jobs.records import UnitReport
from rayprism.jobs.submit import SHIPPED_JOB_PREFIX, shipped_job_file
from rayprism.platform.config import load_job_config
from rayprism.platform.errors import ConfigError

runner = CliRunner()
UNITS = [UnitReport("a", rows=50, errors=0, seconds=1.0), UnitReport("b", rows=49, errors=1, seconds=1.0),
         UnitReport("c", rows=21, errors=0, seconds=0.5)]


def test_the_tally_counts_what_the_workers_report():
    tally = UnitTally(units_total=9)
    for done in UNITS:
        tally.add(done)
    rows = sum(done.rows for done in UNITS)
    assert (tally.units, tally.rows, tally.errors) == (3, rows, 1)
    assert tally.line(12.0) == f"3/9 units, {rows} rows ({rows / 12:.1f} rows/s), 1 rejected"
    assert UnitTally(units_total=1).detail(0) == "0 rows (0.0 rows/s), 0 rejected"


def test_away_from_a_terminal_progress_is_plain_lines_at_most_every_interval(monkeypatch, capsys):
    monkeypatch.setattr(job_commands, "LINE_EVERY_S", 0.0)
    with EmbedProgress(len(UNITS), bar=False) as progress:
        for done in UNITS:
            progress.unit_done(done)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["1/3 units", "2/3 units", "3/3 units"]
    monkeypatch.setattr(job_commands, "LINE_EVERY_S", 3600.0)
    with EmbedProgress(len(UNITS), bar=False) as progress:
        for done in UNITS:
            progress.unit_done(done)
    assert capsys.readouterr().out == ""  # the summary that follows says the rest


def write_job(path, input_path="docs.jsonl"):
    path.write_text(json.dumps({"input": {"path": input_path}, "output": {"parquet": "/shared/out"}}))
    return path


def job_from_elsewhere(tmp_path):
    """A working directory, and a job file outside it."""
    working_dir, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    working_dir.mkdir()
    elsewhere.mkdir()
    return working_dir, write_job(elsewhere / "job.yaml")


def test_a_job_file_inside_the_working_directory_is_shipped_where_it_is(tmp_path):
    job = write_job((tmp_path / "jobs").mkdir() or tmp_path / "jobs" / "job.yaml")
    with shipped_job_file(job, tmp_path, echo=pytest.fail) as relative:
        assert relative.as_posix() == "jobs/job.yaml"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs"]


def test_a_job_file_from_elsewhere_is_copied_in_for_the_upload_and_reads_the_working_directory(tmp_path):
    working_dir, job = job_from_elsewhere(tmp_path)
    lines = []
    with shipped_job_file(job, working_dir, echo=lines.append) as relative:
        shipped = working_dir / relative
        assert relative.parent.as_posix() == "." and relative.name.startswith(SHIPPED_JOB_PREFIX)
        assert shipped.read_bytes() == job.read_bytes()
        assert load_job_config(shipped).input.path == str(working_dir / "docs.jsonl")  # as the cluster reads it
    assert not shipped.exists()
    assert len(lines) == 1 and str(working_dir) in lines[0] and relative.name in lines[0]
    with shipped_job_file(job, working_dir, echo=lines.append) as again:  # same content, same name
        assert again == relative


def test_a_shipped_copy_already_there_is_not_removed(tmp_path):
    working_dir, job = job_from_elsewhere(tmp_path)
    with shipped_job_file(job, working_dir, echo=lambda line: None) as relative:
        (working_dir / "keep").write_bytes((working_dir / relative).read_bytes())
    (working_dir / "keep").rename(working_dir / relative)
    with shipped_job_file(job, working_dir, echo=lambda line: None):
        pass
    assert (working_dir / relative).exists()


def test_a_working_directory_that_takes_no_copy_is_one_sentence(tmp_path):
    working_dir, job = job_from_elsewhere(tmp_path)
    with shipped_job_file(job, working_dir, echo=lambda line: None) as relative:
        pass
    (working_dir / relative).mkdir()  # a directory in the copy's place: the write fails (even as root)
    with pytest.raises(ConfigError, match="move the job file into the working directory") as raised:
        with shipped_job_file(job, working_dir, echo=lambda line: None):
            pass
    assert str(job) in raised.value.message and "--working-dir" in raised.value.message


def test_submit_checks_a_job_from_elsewhere_as_the_cluster_reads_it_and_leaves_no_copy(tmp_path):
    working_dir, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    working_dir.mkdir()
    elsewhere.mkdir()
    (elsewhere / "job.yaml").write_text("input: {path: x.jsonl}\noutput: {}\n")
    result = runner.invoke(app, ["submit", str(elsewhere / "job.yaml"), "--address", "http://127.0.0.1:9",
                                 "--working-dir", str(working_dir)])
    assert result.exit_code == 2 and "set output.parquet, output.collection, or both" in result.output
    assert "is not in the subpath" not in result.output
    assert list(working_dir.iterdir()) == []


def test_embed_and_submit_help_say_where_progress_logs_and_paths_go():
    embed = runner.invoke(app, ["embed", "--help"])
    assert embed.exit_code == 0 and "--verbose" in embed.output and "progress" in embed.output
    submit = runner.invoke(app, ["submit", "--help"])
    assert submit.exit_code == 0
    assert "outside the working directory is shipped" in " ".join(submit.output.replace("│", " ").split())
