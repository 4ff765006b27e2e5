"""``rayprism backup`` and ``rayprism restore``: a collection to parquet + a manifest on this machine, and back,
through the running service (which keeps serving meanwhile)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rayprism.cli.common import API_KEY_OPTION, URL_OPTION, app, fail, progress_bars, service_client
from rayprism.platform.errors import NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

    from rayprism.client import Client

REQUEST_MAX_BYTES = 4 * 1024 * 1024
"""A restore request's largest body: half the service's default limit (``server.max_request_bytes``)."""

BACKUP_HELP = """Back COLLECTION (or the collection an alias reaches) up into DIR on this machine, with a progress bar.

The service takes a consistent snapshot: its store copies the rows aside while writes go on, then holds
writes to the collection back for a moment to read again the documents written meanwhile (searches never
wait), so every write is wholly in the backup or wholly out of it. DIR then gets the rows as parquet (ids, text, fields, dense vectors; a chunked
collection's pieces; a multi-vector collection's token vectors) and manifest.json: the format version,
the collection's config, its dimensions, row and document counts, the aliases that reached it, and a
SHA-256 per file. The manifest is written last: a DIR without one is an unfinished backup. Needs an admin
key where the service has keys.
"""

RESTORE_HELP = """Recreate the collection backed up in DIR, on the service at --url (the same store or another:
Milvus Lite or a Milvus server), without embedding anything again.

Checks every file against the manifest first. The collection is made from the backed-up config (its model
must be served there, with the same dimensions) under its old name or --as NAME; an existing collection of
that name is refused unless --replace (which drops it first: its documents are lost). The aliases that
reached the collection are recreated where the name is free; those that exist already are left as they
are and listed. Needs an admin key where the service has keys.
"""


@app.command(help=BACKUP_HELP)
def backup(
    collection: str = typer.Argument(..., help="Collection (or alias) to back up."),
    directory: Path = typer.Argument(..., metavar="DIR", file_okay=False,
                                     help="Folder to write into (made if missing; must hold no backup)."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
    page_rows: int = typer.Option(1000, min=1, max=16384, help="Rows per page read from the service."),
) -> None:
    with service_client(url, api_key) as client:
        manifest = backup_collection(client, collection, directory, page_rows=page_rows)
    typer.echo(f"backed up {manifest.collection!r}: {manifest.documents} documents ({manifest.rows} rows) in "
               f"{len(manifest.parts)} parquet files, aliases {manifest.aliases or 'none'} → {directory}")


@app.command(help=RESTORE_HELP)
def restore(
    directory: Path = typer.Argument(..., metavar="DIR", exists=True, file_okay=False,
                                     help="A folder `rayprism backup` wrote."),
    as_name: Optional[str] = typer.Option(None, "--as", metavar="NAME", help="Restore under this name. "
                                          "Default: the backed-up collection's name."),
    replace: bool = typer.Option(False, "--replace", help="Drop an existing collection of that name first."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
    batch_rows: int = typer.Option(500, min=1, help="Rows per request (fewer where they would exceed 4 MiB)."),
) -> None:
    with service_client(url, api_key) as client:
        name, aliases, skipped = restore_backup(client, directory, as_name=as_name, replace=replace,
                                                batch_rows=batch_rows)
        count = client.collection(name)["count"]
    typer.echo(f"restored {name!r}: {count} documents; aliases recreated: {aliases or 'none'}")
    for alias, reason in skipped.items():
        typer.echo(f"  alias {alias!r} skipped: {reason}")


def backup_collection(client: Client, collection: str, directory: Path, *, page_rows: int):
    """Snapshot ``collection`` through the service and write it into ``directory``; returns the manifest."""
    from rayprism.platform.config import CollectionConfig
    from rayprism.platform.store.backup_files import BackupWriter, check_free
    from rayprism.platform.store.snapshots import arrow_schema, from_ipc

    check_free(directory)  # before the service holds any write for it
    snapshot = client.snapshot(collection, page_rows=page_rows)
    try:
        config = CollectionConfig.model_validate(snapshot["config"])
        writer = BackupWriter(directory, arrow_schema(config, snapshot["dimensions"]))
        with progress_bars() as progress:
            task = progress.add_task(f"backup {snapshot['collection']} → {directory}", total=snapshot["rows"])
            for page in range(snapshot["pages"]):
                table = from_ipc(client.snapshot_page(snapshot["id"], page))
                writer.write(table)
                progress.advance(task, table.num_rows)
        return writer.finish(collection=snapshot["collection"], config=config, dimensions=snapshot["dimensions"],
                             documents=snapshot["documents"], aliases=snapshot["aliases"],
                             created=snapshot["created"])
    finally:
        client.drop_snapshot(snapshot["id"])


def restore_backup(client: Client, directory: Path, *, as_name: str | None, replace: bool,
                   batch_rows: int) -> tuple[str, list[str], dict[str, str]]:
    """Recreate the backup in ``directory``; returns (its name, the aliases recreated, those skipped with why)."""
    from rayprism.platform.store.backup_files import read_manifest, read_pages, verify

    manifest = read_manifest(directory)
    verify(directory, manifest)
    name = as_name or manifest.collection
    try:
        client.collection(name)
    except NotFoundError:
        pass
    else:
        if not replace:
            fail(f"collection {name!r} exists: restore under another name with --as NAME, or pass --replace to drop "
                 "it first (its documents are lost)")
        client.drop_collection(name)
    config = manifest.config.model_dump(mode="json", exclude={"name", "uri"})
    created = client.create_collection(name, **config)
    if created["dimensions"] != manifest.dimensions:
        client.drop_collection(name)
        fail(f"model {manifest.config.model!r} gives {created['dimensions']} dimensions on this service; the backup's "
             f"vectors have {manifest.dimensions}: serve the model the backup was made with")
    with progress_bars() as progress:
        task = progress.add_task(f"restore {directory} → {name}", total=manifest.rows)
        for page in read_pages(directory, manifest, batch_rows):
            _send(client, name, page)
            progress.advance(task, page.num_rows)
    return (name, *_restore_aliases(client, name, manifest.aliases))


def _send(client: Client, name: str, page: pa.Table) -> None:
    """``page``'s rows in one request, or in halves while its body would exceed :data:`REQUEST_MAX_BYTES`."""
    from rayprism.platform.store.snapshots import to_ipc

    body = to_ipc(page)
    if len(body) > REQUEST_MAX_BYTES and page.num_rows > 1:
        half = page.num_rows // 2
        _send(client, name, page.slice(0, half))
        _send(client, name, page.slice(half))
        return
    client.restore_rows(name, body)


def _restore_aliases(client: Client, name: str, aliases: list[str]) -> tuple[list[str], dict[str, str]]:
    """Point each of ``aliases`` that is free at ``name``; the others are left, with why."""
    existing = client.aliases()
    collections = {collection["name"] for collection in client.collections()["data"]}
    made, skipped = [], {}
    for alias in aliases:
        if alias in existing:
            skipped[alias] = f"it exists, reaching {existing[alias]!r}"
        elif alias in collections:
            skipped[alias] = "a collection has that name"
        else:
            client.point_alias(alias, name)
            made.append(alias)
    return made, skipped
