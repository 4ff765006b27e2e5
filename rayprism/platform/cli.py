"""The ``rayprism`` command line."""

from __future__ import annotations

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


def main() -> None:
    app(prog_name="rayprism")


if __name__ == "__main__":
    sys.exit(main())
