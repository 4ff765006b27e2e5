"""``rayprism ingest`` and ``rayprism search``: collections through the running service."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rayprism.cli.common import API_KEY_OPTION, URL_OPTION, app, fail, progress_bars, service_client

if TYPE_CHECKING:
    from rayprism.client import Client, IngestSummary


INGEST_HELP = """Send documents into a collection through the running service, with a progress bar.

PATH is Markdown, plain-text, HTML or PDF files, folders (read recursively; hidden files and other
types skipped) or globs (quote them, e.g. 'docs/**/*.md', to let rayprism expand ** itself). Each file
is one document, its text extracted (HTML as Markdown, PDF by pypdf); a chunked collection cuts it
into pieces. Its id is its path relative to the folder or glob it was found through (a file named
alone: its name), or to --root. The collection's fields path, title and modified are filled from the
file (declare them varchar when you create the collection; format and content_hash too if declared).

A file whose bytes were already sent into this collection is not read or sent again: a record of
what the service took is kept in ~/.local/state/rayprism/ingest/ (under $XDG_STATE_HOME if set;
--state picks the file, --resend ignores it), so an interrupted ingest resumes by running the same
command. A file that cannot be read is reported with its path and reason, the rest goes in, and the
exit status is 1.

A single JSONL file (one JSON document per line) is streamed as it is instead: --id-field,
--text-field and --keep-unknown shape its lines; documents stored with the same content are skipped
without being embedded again. Lines that are not JSON and documents the service rejects are listed
with their line numbers; the rest are written.
"""


@app.command(help=INGEST_HELP)
def ingest(
    collection: str = typer.Argument(..., help="Collection to upsert into (must exist or be declared)."),
    paths: list[str] = typer.Argument(..., metavar="PATH...",
                                      help="Files, folders or globs of documents; or one JSONL file."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
    batch_size: int = typer.Option(64, min=1, help="Documents per request."),
    root: Optional[Path] = typer.Option(None, file_okay=False, help="Files: ids are paths relative to this "
                                        "folder. Default: the folder (or a glob's fixed folders) each was found in."),
    state: Optional[Path] = typer.Option(None, dir_okay=False, help="Files: the record of files sent. Default: "
                                         "~/.local/state/rayprism/ingest/<collection>-<service digest>.jsonl."),
    resend: bool = typer.Option(False, "--resend", help="Files: send every file, whatever the record says (the "
                                "service still skips documents it holds unchanged, without embedding them)."),
    id_field: Optional[str] = typer.Option(None, help="JSONL: key holding each document's id. Default: id."),
    text_field: Optional[str] = typer.Option(None, help="JSONL: key holding the text. Default: the collection's "
                                             "text field."),
    keep_unknown: bool = typer.Option(
        False, "--keep-unknown", help="JSONL: send keys the collection does not have (they are rejected) instead of "
        "dropping them."
    ),
) -> None:
    from rayprism.cli.file_ingest import SentRecord
    from rayprism.client import IngestSummary

    summary = IngestSummary()
    jsonl = len(paths) == 1 and paths[0].lower().endswith(".jsonl")
    if any(path.lower().endswith(".jsonl") for path in paths) and not jsonl:
        fail("a JSONL file is ingested on its own: rayprism ingest COLLECTION FILE.jsonl")
    other_kind = {"--root": root, "--state": state, "--resend": resend} if jsonl else {
        "--id-field": id_field, "--text-field": text_field, "--keep-unknown": keep_unknown}
    misplaced = [option for option, value in other_kind.items() if value]
    if misplaced:
        fail(f"{', '.join(misplaced)}: " + ("for files only, not a JSONL file" if jsonl else "for a JSONL file only"))
    started = time.perf_counter()
    resume = "documents stored with the same content are skipped, not embedded again"
    try:
        with service_client(url, api_key) as client:
            schema = client.collection(collection)
            if jsonl:
                notes = _ingest_jsonl(client, collection, schema, Path(paths[0]), summary, batch_size=batch_size,
                                      id_field=id_field, text_field=text_field, keep_unknown=keep_unknown)
            else:
                record_path = state or SentRecord.default_path(client.url, collection)
                resume = f"files {record_path} lists are not even sent, and {resume}"
                notes = _ingest_files(client, collection, schema, paths, summary, batch_size=batch_size,
                                      root=root, record_path=record_path, resend=resend)
    except KeyboardInterrupt:
        typer.echo(
            f"\ninterrupted after {time.perf_counter() - started:.1f} s: {summary.upserted} documents written, "
            f"{summary.unchanged} already stored. Run the same command again to finish: {resume}.", err=True,
        )
        raise typer.Exit(130) from None
    for note in notes:
        typer.echo(note)
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


def _ingest_jsonl(client: Client, collection: str, schema: dict, file: Path, summary: IngestSummary, *,
                  batch_size: int, id_field: str | None, text_field: str | None, keep_unknown: bool) -> list[str]:
    """One JSONL file's lines as documents; returns what the user should be told beside the summary."""
    from rayprism.client import FieldMapping, read_jsonl

    if not file.is_file():
        fail(f"{file}: no such file")
    mapping = FieldMapping(id_field=id_field or "id", text_field=text_field, keep_unknown=keep_unknown)
    total = sum(1 for line in file.open(encoding="utf-8") if line.strip())
    with progress_bars() as progress:
        task = progress.add_task(f"ingest {file.name} → {collection}", total=total)
        client.ingest(
            collection, mapping.apply(schema, read_jsonl(file, summary)), batch_size=batch_size,
            summary=summary, on_batch=lambda n: progress.advance(task, n),
        )
    if mapping.dropped:
        return [f"dropped keys the collection does not have: {sorted(mapping.dropped)} (--keep-unknown to send them)"]
    return []


def _ingest_files(client: Client, collection: str, schema: dict, paths: list[str], summary: IngestSummary, *,
                  batch_size: int, root: Path | None, record_path: Path, resend: bool) -> list[str]:
    """Files, folders and globs as documents, those the record shows sent unchanged skipped (unless ``resend``);
    returns what the user should be told beside the summary."""
    from rayprism.cli.file_ingest import CollectionUnfitError, FileIngest, SentRecord, file_fields, missing_fields_note
    from rayprism.platform.text.files import find_files

    try:
        fields, missing = file_fields(collection, schema)
    except CollectionUnfitError as error:
        fail(str(error))
    notes = [missing_fields_note(collection, missing)] if missing else []
    record = SentRecord(record_path)
    if schema["count"] < len(record):
        notes.append(f"note: {collection!r} holds {schema['count']} documents, fewer than the {len(record)} files "
                     f"{record.path} lists as sent (it was emptied or made again): every file was sent")
        record.clear()
    found = find_files(paths, root=root)
    try:
        with progress_bars() as progress:
            task = progress.add_task(f"ingest {len(found)} files → {collection}", total=len(found))
            files = FileIngest(schema["text_field"], fields, record, summary, lambda: progress.advance(task),
                               skip_known=not resend)
            client.ingest(collection, files.documents(found), batch_size=batch_size, summary=summary,
                          on_batch=lambda n: progress.advance(task, n), on_written=files.written)
    finally:
        record.close()
    if files.skipped:
        notes.append(f"skipped {files.skipped} files sent unchanged before (--resend sends them again; record: "
                     f"{record.path})")
    return notes


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
