"""What every command shares: the Typer app, how failures are printed, the service URL option."""

from __future__ import annotations

from typing import NoReturn

import typer

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


URL_OPTION = typer.Option(
    None, "--url", envvar="RAYPRISM_URL", help="Service URL. Default: $RAYPRISM_URL, else http://127.0.0.1:8000."
)
VERBOSE_OPTION = typer.Option(
    False, "--verbose", "-v", help="Also show Ray's own logs (by default they stay in Ray's log folder)."
)
API_KEY_OPTION = typer.Option(
    None, "--api-key", envvar="RAYPRISM_API_KEY", show_envvar=True,
    help="The service's API key, if it has one (sent as Authorization: Bearer). Default: $RAYPRISM_API_KEY.",
)
