"""``rayprism reembed`` and ``rayprism rollback``: move a collection to another model while it serves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rayprism.cli.common import API_KEY_OPTION, URL_OPTION, app, fail, service_client
from rayprism.platform.constants import REEMBED_BATCH_SIZE, REEMBED_MAX_BATCH_SIZE

if TYPE_CHECKING:
    from rayprism.platform.api.responses import ReembedJob

POLL_S = 0.5


def read_queries(path: Path) -> list[dict]:
    """A JSONL query set: one ``{"query": ..., "relevant": [ids]}`` a line (``doc_id`` for one id works too)."""
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            relevant = row["relevant"] if "relevant" in row else [row["doc_id"]]
            queries.append({"query": row["query"], "relevant": [str(doc_id) for doc_id in relevant]})
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            fail(f"{path}:{number}: a query line needs query and relevant (or doc_id): {error}")
    return queries


def follow(client, job: ReembedJob) -> ReembedJob:
    """Show the job's progress until it ends; returns its last state."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"{job.source} → {job.target} ({job.model})", total=None)
        while job.state == "running":
            pending = f", {job.changes_pending} writes to replay" if job.phase != "copying" else ""
            progress.update(task, total=job.documents_total, completed=job.documents_done,
                            description=f"{job.phase}{pending}: {job.source} → {job.target}")
            time.sleep(POLL_S)
            job = client.reembed_job(job.id)
        progress.update(task, total=job.documents_total, completed=job.documents_done,
                        description=f"{job.state}: {job.source} → {job.target}")
    return job


def report(job: ReembedJob) -> None:
    gate, bridge = job.gate, job.bridge
    if gate is not None:
        old = f"old {gate.old:.3f}, " if gate.old is not None else ""
        typer.echo(f"gate {gate.metric}: {old}new {gate.new:.3f}, threshold {gate.threshold:.3f} → "
                   f"{'passed' if gate.passed else 'refused'}")
    if bridge is not None:
        typer.echo(f"bridge ({bridge.method}): cosine to old {bridge.against_old.mean_cosine:.3f}, "
                   f"top-10 vs old {bridge.against_old.top10_agreement:.3f}, "
                   f"vs new {bridge.against_new.top10_agreement:.3f}")
    if job.state == "done":
        typer.echo(f"{job.alias} → {job.target} ({job.model}); {job.source} is kept "
                   f"(`rayprism rollback {job.alias}` points back)" if job.direction == "forward"
                   else f"{job.alias} → {job.target} again ({job.model})")
    elif job.state == "refused":
        fail(f"the swap was refused by the evaluation gate; {job.alias} still reaches {job.source}, "
             f"and {job.target} is left for inspection", code=1)
    elif job.state == "interrupted":
        fail(f"job {job.id} was interrupted; run the same command again to resume it", code=1)
    elif job.state == "failed":
        fail(f"job {job.id} failed: {job.error}", code=1)


@app.command()
def reembed(
    collection: str = typer.Argument(..., help="The alias to move (a collection is reached through an alias)."),
    model: str = typer.Option(..., "--model", "-m", help="The served embedding model to embed it with."),
    queries: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False,
        help="JSONL of {query, relevant: list of ids} (or doc_id): the gate is then MRR@10 on them. Default: top-10 "
        "agreement with the old index, sampled stored documents as queries."),
    min_score: Optional[float] = typer.Option(
        None, min=0, max=1, help="Refuse the swap below this gate score. Default: 0.95 × the old MRR@10 with "
        "--queries, 0.4 agreement without."),
    batch_size: int = typer.Option(
        REEMBED_BATCH_SIZE, min=1, max=REEMBED_MAX_BATCH_SIZE, help="Documents embedded per step."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job with a progress bar until it ends."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
) -> None:
    """Re-embed a collection with another model while it keeps serving, then swap its alias.

    A job in the service's Ray cluster copies every stored document into a new physical collection
    (same schema, fields and BM25) embedded by MODEL, replays the writes made meanwhile, runs the
    evaluation gate, and repoints the alias atomically: searches never fail and no write is lost.
    The old collection is kept: `rayprism rollback COLLECTION` points back. Ctrl-C stops following,
    not the job; an interrupted job resumes when the same command runs again.
    """
    evaluation: dict = {}
    if queries is not None:
        evaluation["queries"] = read_queries(queries)
    if min_score is not None:
        evaluation["min_score"] = min_score
    with service_client(url, api_key) as client:
        job = client.reembed(collection, model, evaluation=evaluation, batch_size=batch_size)
        typer.echo(f"job {job.id}: {job.source} → {job.target} with {model}" + (" (resumed)" if job.runs else ""))
        if not wait:
            return
        try:
            job = follow(client, job)
        except KeyboardInterrupt:
            typer.echo(f"\nstopped following; the job runs on: rayprism reembed-status {job.id}", err=True)
            raise typer.Exit(130) from None
    report(job)


@app.command("reembed-status")
def reembed_status(
    job_id: str = typer.Argument(..., help="The job's id (printed by `rayprism reembed`)."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
) -> None:
    """Print a re-embedding job as JSON: state, progress, gate and bridge."""
    with service_client(url, api_key) as client:
        typer.echo(client.reembed_job(job_id).model_dump_json(indent=2))


@app.command()
def rollback(
    collection: str = typer.Argument(..., help="The alias to point back."),
    batch_size: Optional[int] = typer.Option(
        None, min=1, max=REEMBED_MAX_BATCH_SIZE,
        help="Writes replayed per step. Default: the batch size of the re-embedding it undoes."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job until it ends."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
) -> None:
    """Point an alias back at the collection its last re-embedding moved it from.

    Writes made since the swap are replayed into the old collection (embedded by its model) first, so nothing
    written in between is lost.
    """
    with service_client(url, api_key) as client:
        job = client.rollback(collection, batch_size=batch_size)
        typer.echo(f"job {job.id}: {job.source} → {job.target} ({job.model})")
        if wait:
            job = follow(client, job)
    report(job)
