"""``rayprism embed`` and ``rayprism submit``: batch jobs, here or on a cluster."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rayprism.cli.common import VERBOSE_OPTION, app, fail
from rayprism.platform.errors import RayprismError

if TYPE_CHECKING:
    from rayprism.jobs.records import UnitReport

LINE_EVERY_S = 10.0
"""Away from a terminal (a log file, `rayprism submit`), `rayprism embed` prints its progress at most this often."""


@dataclass
class UnitTally:
    """What `rayprism embed` shows while it runs, counted from the units its workers report finished."""

    units_total: int
    units: int = 0
    rows: int = 0
    errors: int = 0

    def add(self, done: UnitReport) -> None:
        self.units += 1
        self.rows += done.rows
        self.errors += done.errors

    def detail(self, elapsed_s: float) -> str:
        rate = self.rows / elapsed_s if elapsed_s > 0 else 0.0
        return f"{self.rows} rows ({rate:.1f} rows/s), {self.errors} rejected"

    def line(self, elapsed_s: float) -> str:
        return f"{self.units}/{self.units_total} units, {self.detail(elapsed_s)}"


class EmbedProgress:
    """The job's own progress: one bar on a terminal; elsewhere a plain line at most every LINE_EVERY_S
    (a bar there would print only once, at the end). Its clock starts with the job, after Ray, as the
    summary's does."""

    def __init__(self, units: int, *, bar: bool):
        self.tally = UnitTally(units)
        self.started = self.printed = time.monotonic()
        self._bar = None
        if bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("units"),
                       TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
            self._bar = Progress(*columns, transient=False)
            self._task = self._bar.add_task("embedding", total=units, detail=self.tally.detail(0))

    def __enter__(self) -> EmbedProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def unit_done(self, done: UnitReport) -> None:
        self.tally.add(done)
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.tally.units, detail=self.tally.detail(now - self.started))
        elif now - self.printed >= LINE_EVERY_S:
            typer.echo(self.tally.line(now - self.started))
            self.printed = now


@app.command()
def embed(
    job_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Job YAML (see configs/embed-job.yaml)."),
    address: Optional[str] = typer.Option(
        None, help="Run on this Ray cluster (e.g. auto, or ray://head:10001). Default: $RAY_ADDRESS, else a local Ray."
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Embed (and compress) a corpus with Ray Data; write parquet parts and/or upsert into Milvus.

    Resumable: a finished job does nothing when run again, an interrupted one finishes the rest.
    Bad rows are written to _errors.jsonl in the output (on_error: skip) or stop the job (on_error: fail).
    Relative paths in the job file are relative to the job file's own directory.
    Shows the job's own progress (units, rows, rows/s, rejected rows); Ray's logs stay in Ray's log folder
    unless --verbose.
    """
    from rayprism.platform.config import load_job_config

    try:
        from rayprism.jobs.embed import connect, execute, plan

        job_plan = plan(load_job_config(job_file))
        if not job_plan.todo:
            rows, errors = job_plan.state.totals()
            typer.echo(f"nothing to do: all {len(job_plan.units)} units are done ({rows} rows, {errors} rejected) "
                       f"in {job_plan.state.directory}")
            return
        typer.echo(f"{len(job_plan.todo)} of {len(job_plan.units)} units to run; progress in {job_plan.state.directory}")
        connect(address, verbose=verbose)
        with EmbedProgress(len(job_plan.todo), bar=sys.stdout.isatty() and not verbose) as progress:
            summary = execute(job_plan, on_unit=progress.unit_done)
    except RayprismError as error:
        fail(error.message)
    typer.echo(
        f"embedded {summary.rows} rows in {summary.seconds:.1f} s ({summary.rows_per_s:.1f} rows/s), "
        f"rejected {summary.errors}; all runs: {summary.rows_total} rows, {summary.errors_total} rejected"
    )
    for output in summary.outputs:
        typer.echo(f"  output: {output}")
    if summary.collection_count is not None:
        typer.echo(f"  collection now holds {summary.collection_count} documents")
    if summary.errors_file:
        typer.echo(f"  rejected rows: {summary.errors_file}")
    if summary.worker_deaths:
        typer.echo(f"  encoder workers lost: {summary.worker_deaths} (their unfinished units ran again)")


@app.command()
def submit(
    job_file: Path = typer.Argument(
        ..., exists=True, dir_okay=False,
        help="Job YAML. One outside the working directory is shipped too, as a copy at its root: its relative "
        "paths then name files of the working directory.",
    ),
    address: str = typer.Option(..., envvar="RAY_JOB_ADDRESS", help="Ray dashboard of the cluster, e.g. http://head:8265."),
    working_dir: Path = typer.Option(
        Path("."), exists=True, file_okay=False, help="Directory shipped with the job (the job file and relative inputs)."
    ),
    requirements: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="requirements.txt installed for the job (runtime_env pip)."
    ),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Stream the job's logs until it ends."),
) -> None:
    """Submit an embed job to a Ray cluster through the Ray Jobs API and stream its logs.

    The cluster runs `rayprism embed JOB.yaml` in a copy of the working directory, so the job behaves as it
    does locally; inputs and outputs on shared storage or object stores are read there. Relative paths in
    the job file are read from the job file's own directory inside the working directory; a job file from
    elsewhere is copied to the working directory's root, so its relative paths are read from there.
    """
    from rayprism.jobs.submit import submit_and_follow

    try:
        submission_id, status = submit_and_follow(
            address, job_file, working_dir=working_dir, requirements=requirements, follow=follow, echo=typer.echo
        )
    except RayprismError as error:
        fail(error.message)
    typer.echo(f"job {submission_id}: {status}")
    if follow and status != "SUCCEEDED":
        raise typer.Exit(1)
