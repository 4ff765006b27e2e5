"""What every command shares: the Typer app, how failures are printed, the service URL option."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, NoReturn, Optional

import typer

from rayprism.platform.constants import API_KEY_VARIABLE, URL_VARIABLE
from rayprism.platform.errors import RayprismError

if TYPE_CHECKING:
    from rich.progress import Progress

    from rayprism.client import Client

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


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def service_client(url: Optional[str], api_key: Optional[str]) -> Iterator[Client]:
    """The running service's client (``url`` or the default); an error it answers ends the command
    with its message."""
    from rayprism.client import DEFAULT_URL, Client

    try:
        with Client(url or DEFAULT_URL, api_key=api_key) as client:
            yield client
    except RayprismError as error:
        fail(error.message)


URL_OPTION = typer.Option(
    None, "--url", envvar=URL_VARIABLE, help="Service URL. Default: $RAYPRISM_URL, else http://127.0.0.1:8000."
)
VERBOSE_OPTION = typer.Option(
    False, "--verbose", "-v", help="Also show Ray's own logs (by default they stay in Ray's log folder)."
)
API_KEY_OPTION = typer.Option(
    None, "--api-key", envvar=API_KEY_VARIABLE, show_envvar=True,
    help="The service's API key, if it has one (sent as Authorization: Bearer). Default: $RAYPRISM_API_KEY.",
)


def progress_bars() -> Progress:
    """Rich progress bars for long work: what, a bar, done of total, time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, transient=False)
