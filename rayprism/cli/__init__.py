"""The ``rayprism`` command line: one module per command group, wiring the layers below."""

from rayprism.cli import backup, collections, jobs, reembed, serve, train, tune  # noqa: F401  (each registers its commands)
from rayprism.cli.common import app


def main() -> None:
    app(prog_name="rayprism")


__all__ = ["app", "main"]
