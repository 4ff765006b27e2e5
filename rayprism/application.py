"""The Serve application a cluster runs from a Serve config file (a KubeRay RayService's ``serveConfigV2``):
``import_path: rayprism.application:app_builder``, the serve YAML under ``args.config``.

It lives above :mod:`rayprism.deployments` and :mod:`rayprism.jobs`, as the CLI does, because it joins them the way
``rayprism serve`` does: the serving replicas get what starts the OpenAI Batch API's jobs, so a cluster runs
batches too.
"""

from __future__ import annotations

from ray.serve.deployment import Application

from rayprism.deployments.app import build_application
from rayprism.jobs.batches import BatchJobs
from rayprism.platform.config import ServeConfig, parse_config
from rayprism.platform.constants import APP_NAME, DEPLOYMENT_NAME


def app_builder(args: dict) -> Application:
    """The application, with the serve YAML under ``args.config`` validated as ``rayprism serve`` validates its
    file. Its name in the Serve config must be ``rayprism`` (the chart's), the name batch jobs reach it by."""
    config = parse_config(ServeConfig, args.get("config"), "the application's args.config")
    return build_application(config, BatchJobs(APP_NAME, DEPLOYMENT_NAME))
