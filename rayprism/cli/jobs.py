"""``rayprism embed`` and ``rayprism submit``: batch jobs, here or on a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rayprism.cli.common import VERBOSE_OPTION, app, fail
from rayprism.platform.errors import RayprismError


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
    """
    from rayprism.platform.config import load_job_config

    try:
        from rayprism.jobs.embed import plan, run

        job_plan = plan(load_job_config(job_file))
        if not job_plan.todo:
            rows, errors = job_plan.state.totals()
            typer.echo(f"nothing to do: all {len(job_plan.units)} units are done ({rows} rows, {errors} rejected) "
                       f"in {job_plan.state.directory}")
            return
        typer.echo(f"{len(job_plan.todo)} of {len(job_plan.units)} units to run; progress in {job_plan.state.directory}")
        summary = run(job_plan, address=address, verbose=verbose)
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


@app.command()
def submit(
    job_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Job YAML, inside the working directory."),
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
    does locally; inputs and outputs on shared storage or object stores are read there.
    """
    from rayprism.jobs.submit import submit_and_follow
    from rayprism.platform.config import load_job_config

    try:
        load_job_config(job_file)  # fail here, not minutes later on the cluster
        submission_id, status = submit_and_follow(
            address, job_file, working_dir=working_dir, requirements=requirements, follow=follow, echo=typer.echo
        )
    except RayprismError as error:
        fail(error.message)
    except ValueError as error:  # the job file lies outside the working directory
        fail(str(error))
    typer.echo(f"job {submission_id}: {status}")
    if follow and status != "SUCCEEDED":
        raise typer.Exit(1)
