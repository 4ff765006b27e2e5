"""The ``rayprism`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from rayprism.platform.errors import RayprismError

app = typer.Typer(
    name="rayprism",
    help="Embedding platform on Ray: serve encoders over an OpenAI-compatible API, "
    "embed corpora in batch, and search them in Milvus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Embedding platform on Ray: serve, embed, ingest and search."""


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def serve(
    config: Optional[Path] = typer.Argument(
        None, help="Serve config YAML (see configs/serve.yaml). Default: MiniLM from its PyPI package, on CPU."
    ),
    host: Optional[str] = typer.Option(None, help="Interface to listen on. Default: from the config, else 127.0.0.1."),
    port: Optional[int] = typer.Option(None, help="Port to listen on. Default: from the config, else 8000."),
    address: Optional[str] = typer.Option(
        None, help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting Ray locally."
    ),
) -> None:
    """Serve the configured models at an OpenAI-compatible /v1/embeddings until Ctrl-C or SIGTERM."""
    from rayprism.platform.config import load_serve_config

    try:
        settings = load_serve_config(config)
        overrides = {key: value for key, value in {"host": host, "port": port}.items() if value is not None}
        if overrides:
            settings = settings.model_copy(update={"server": settings.server.model_copy(update=overrides)})
        from rayprism.deployments.launch import serve_forever

        serve_forever(settings, address=address, echo=typer.echo)
    except RayprismError as error:
        fail(error.message)


@app.command()
def embed(
    job_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Job YAML (see configs/embed-job.yaml)."),
    address: Optional[str] = typer.Option(
        None, help="Run on this Ray cluster (e.g. auto, or ray://head:10001). Default: $RAY_ADDRESS, else a local Ray."
    ),
) -> None:
    """Embed (and compress) a corpus with Ray Data; write parquet parts and/or upsert into Milvus.

    Resumable: a finished job does nothing when run again, an interrupted one finishes the rest.
    Bad rows are written to errors.jsonl in the output (on_error: skip) or stop the job (on_error: fail).
    """
    import os

    from rayprism.platform.config import load_job_config

    try:
        from rayprism.jobs.embed import execute, plan

        job_plan = plan(load_job_config(job_file))
        if not job_plan.todo:
            rows, errors = job_plan.state.totals()
            typer.echo(f"nothing to do: all {len(job_plan.units)} units are done ({rows} rows, {errors} rejected) "
                       f"in {job_plan.state.directory}")
            return
        typer.echo(f"{len(job_plan.todo)} of {len(job_plan.units)} units to run; progress in {job_plan.state.directory}")
        import ray

        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
        summary = execute(job_plan)
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


URL_OPTION = typer.Option(
    None, "--url", envvar="RAYPRISM_URL", help="Service URL. Default: $RAYPRISM_URL, else http://127.0.0.1:8000."
)


@app.command()
def ingest(
    collection: str = typer.Argument(..., help="Collection to upsert into (must exist or be declared)."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL file, one document per line."),
    url: Optional[str] = URL_OPTION,
    batch_size: int = typer.Option(64, min=1, help="Documents per request."),
    id_field: Optional[str] = typer.Option(None, help="Key holding each document's id. Default: id."),
    text_field: Optional[str] = typer.Option(None, help="Key holding the text. Default: the collection's text field."),
    keep_unknown: bool = typer.Option(
        False, "--keep-unknown", help="Send keys the collection does not have (they are rejected) instead of dropping them."
    ),
) -> None:
    """Stream a JSONL file into a collection through the running service, with a progress bar.

    Re-running is safe: documents are upserted by id. Lines that are not JSON and documents the
    service rejects are listed with their line numbers; the rest are written.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rayprism.platform.client import DEFAULT_URL, Client, IngestSummary, SourceDocument, read_jsonl

    summary = IngestSummary()
    try:
        with Client(url or DEFAULT_URL) as client:
            schema = client.collection(collection)
            target_text = schema["text_field"]
            known = {"id", target_text, *schema["fields"]}
            dropped: set[str] = set()

            def shaped(documents):
                for document in documents:
                    body = dict(document.body)
                    if id_field and id_field != "id":
                        body["id"] = body.pop(id_field, None)
                    if text_field and text_field != target_text:
                        body[target_text] = body.pop(text_field, None)
                    if not keep_unknown:
                        dropped.update(body.keys() - known)
                        body = {key: value for key, value in body.items() if key in known}
                    yield SourceDocument(document.where, body)

            total = sum(1 for line in file.open(encoding="utf-8") if line.strip())
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=False) as progress:
                task = progress.add_task(f"ingest {file.name} → {collection}", total=total)
                client.ingest(
                    collection, shaped(read_jsonl(file, summary)), batch_size=batch_size, summary=summary,
                    on_batch=lambda n: progress.advance(task, n),
                )
    except RayprismError as error:
        fail(error.message)
    if dropped:
        typer.echo(f"dropped keys the collection does not have: {sorted(dropped)} (--keep-unknown to send them)")
    typer.echo(
        f"upserted {summary.upserted} documents into {collection!r} in {summary.seconds:.1f} s "
        f"({summary.docs_per_s:.0f} docs/s); rejected {len(summary.rejected)}"
    )
    for rejected in summary.rejected[:20]:
        typer.echo(f"  rejected {rejected.where}: {rejected.reason}")
    if len(summary.rejected) > 20:
        typer.echo(f"  ... and {len(summary.rejected) - 20} more")
    if summary.rejected:
        raise typer.Exit(1)


@app.command()
def search(
    collection: str = typer.Argument(..., help="Collection to search."),
    query: str = typer.Argument(..., help="What to look for, in plain words."),
    url: Optional[str] = URL_OPTION,
    mode: Optional[str] = typer.Option(None, help="hybrid, dense or sparse. Default: hybrid when the collection has BM25."),
    filter: Optional[str] = typer.Option(None, "--filter", help='Milvus boolean expression, e.g. \'section == "net"\'.'),
    k: int = typer.Option(10, "--k", "-k", min=1, max=1000, help="How many results."),
    json_output: bool = typer.Option(False, "--json", help="Print the raw JSON response."),
) -> None:
    """Search a collection and print the hits as a table."""
    from rich.console import Console
    from rich.table import Table

    from rayprism.platform.client import DEFAULT_URL, Client

    try:
        with Client(url or DEFAULT_URL) as client:
            result = client.search(collection, query, mode=mode, filter=filter, k=k)
    except RayprismError as error:
        fail(error.message)
    if json_output:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{collection}: {query!r} ({result['mode']})", show_lines=False)
    for column in ("#", "id", "score", "fields"):
        table.add_column(column, overflow="fold")
    for rank, hit in enumerate(result["results"], start=1):
        fields = "  ".join(f"{key}={_short(value)}" for key, value in hit["fields"].items())
        table.add_row(str(rank), str(hit["id"]), f"{hit['score']:.4f}", fields)
    Console().print(table if result["results"] else "no results")


def _short(value, limit: int = 120) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main() -> None:
    app(prog_name="rayprism")


if __name__ == "__main__":
    sys.exit(main())
