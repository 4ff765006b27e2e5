"""``rayprism serve``: run the service until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rayprism.cli.common import VERBOSE_OPTION, app, fail
from rayprism.platform.errors import RayprismError


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
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Serve the configured models at an OpenAI-compatible /v1/embeddings until Ctrl-C or SIGTERM."""
    from rayprism.platform.config import load_serve_config

    try:
        settings = load_serve_config(config)
        overrides = {key: value for key, value in {"host": host, "port": port}.items() if value is not None}
        if overrides:
            settings = settings.model_copy(update={"server": settings.server.model_copy(update=overrides)})
        from rayprism.platform.ray_runtime import keep_local_ray_private

        keep_local_ray_private(address)  # before the imports below import Ray: it reads the setting then
        from rayprism.deployments.launch import serve_forever
        from rayprism.jobs.batches import BatchJobs
        from rayprism.platform.constants import APP_NAME, DEPLOYMENT_NAME

        serve_forever(settings, address=address, echo=typer.echo, verbose=verbose,
                      batch_jobs=BatchJobs(APP_NAME, DEPLOYMENT_NAME))
    except RayprismError as error:
        fail(error.message)
