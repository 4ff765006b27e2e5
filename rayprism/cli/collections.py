"""``rayprism ingest`` and ``rayprism search``: collections through the running service."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from rayprism.cli.common import API_KEY_OPTION, URL_OPTION, app, service_client


@app.command()
def ingest(
    collection: str = typer.Argument(..., help="Collection to upsert into (must exist or be declared)."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL file, one document per line."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
    batch_size: int = typer.Option(64, min=1, help="Documents per request."),
    id_field: Optional[str] = typer.Option(None, help="Key holding each document's id. Default: id."),
    text_field: Optional[str] = typer.Option(None, help="Key holding the text. Default: the collection's text field."),
    keep_unknown: bool = typer.Option(
        False, "--keep-unknown", help="Send keys the collection does not have (they are rejected) instead of dropping them."
    ),
) -> None:
    """Stream a JSONL file into a collection through the running service, with a progress bar.

    Re-running is safe and cheap: documents are upserted by id, and those already stored with the
    same content are skipped without being embedded again, so an interrupted ingest resumes by
    running the same command. Lines that are not JSON and documents the service rejects are listed
    with their line numbers; the rest are written.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rayprism.client import FieldMapping, IngestSummary, read_jsonl

    summary = IngestSummary()
    mapping = FieldMapping(id_field=id_field or "id", text_field=text_field, keep_unknown=keep_unknown)
    started = time.perf_counter()
    try:
        with service_client(url, api_key) as client:
            schema = client.collection(collection)
            total = sum(1 for line in file.open(encoding="utf-8") if line.strip())
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=False) as progress:
                task = progress.add_task(f"ingest {file.name} → {collection}", total=total)
                client.ingest(
                    collection, mapping.apply(schema, read_jsonl(file, summary)), batch_size=batch_size,
                    summary=summary, on_batch=lambda n: progress.advance(task, n),
                )
    except KeyboardInterrupt:
        typer.echo(
            f"\ninterrupted after {time.perf_counter() - started:.1f} s: {summary.upserted} documents written, "
            f"{summary.unchanged} already stored. Run the same command again to finish: documents stored with "
            "the same content are skipped, not embedded again.", err=True,
        )
        raise typer.Exit(130) from None
    if mapping.dropped:
        typer.echo(f"dropped keys the collection does not have: {sorted(mapping.dropped)} (--keep-unknown to send them)")
    typer.echo(
        f"upserted {summary.upserted} documents into {collection!r} in {summary.seconds:.1f} s "
        f"({summary.docs_per_s:.0f} docs/s); {summary.unchanged} already stored unchanged; "
        f"rejected {len(summary.rejected)}"
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
    api_key: Optional[str] = API_KEY_OPTION,
    mode: Optional[str] = typer.Option(None, help="hybrid, dense, sparse or multivector. Default: multivector for a "
                                       "multi-vector collection, else hybrid when the collection has BM25."),
    filter: Optional[str] = typer.Option(None, "--filter", help='Milvus boolean expression, e.g. \'section == "net"\'.'),
    k: int = typer.Option(10, "--k", "-k", min=1, max=1000, help="How many results."),
    json_output: bool = typer.Option(False, "--json", help="Print the raw JSON response."),
) -> None:
    """Search a collection and print the hits as a table."""
    from rich.console import Console
    from rich.table import Table

    with service_client(url, api_key) as client:
        result = client.search(collection, query, mode=mode, filter=filter, k=k)
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


alias_app = typer.Typer(
    name="alias", no_args_is_help=True,
    help="Names that point at a collection: searches and writes through an alias reach its collection, "
    "and repointing one is atomic (how a collection moves to a new model without downtime).",
)
app.add_typer(alias_app)


@alias_app.command("set")
def alias_set(
    name: str = typer.Argument(..., help="The alias."),
    collection: str = typer.Argument(..., help="The collection it should reach."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
) -> None:
    """Create an alias, or repoint it at another collection in one step."""
    with service_client(url, api_key) as client:
        previous = client.point_alias(name, collection)["previous"]
    typer.echo(f"{name} → {collection}" + (f" (was {previous})" if previous else " (new)"))


@alias_app.command("list")
def alias_list(url: Optional[str] = URL_OPTION, api_key: Optional[str] = API_KEY_OPTION) -> None:
    """Every alias and the collection it reaches."""
    with service_client(url, api_key) as client:
        aliases = client.aliases()
    for alias, collection in sorted(aliases.items()):
        typer.echo(f"{alias} → {collection}")


@alias_app.command("rm")
def alias_rm(
    name: str = typer.Argument(..., help="The alias to remove (its collection stays)."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
) -> None:
    """Remove an alias; the collection it reached is kept."""
    with service_client(url, api_key) as client:
        collection = client.drop_alias(name)["collection"]
    typer.echo(f"removed {name} (it reached {collection}, which stays)")


def _short(value, limit: int = 120) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
