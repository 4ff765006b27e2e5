"""Ray Serve wiring: the serving deployment and how config maps onto its options."""

from __future__ import annotations

from ray import serve
from ray.serve.deployment import Application

from rayprism.deployments.http import create_app
from rayprism.deployments.service import EmbeddingService
from rayprism.platform.config import ServeConfig

APP_NAME = "rayprism"
DEPLOYMENT_NAME = "rayprism"


@serve.ingress()
class ServingReplica(EmbeddingService):
    """One replica: the HTTP app, and every configured model with its batcher, in one process."""

    def __init__(self, config: dict):
        replica = serve.get_replica_context().replica_id.unique_id
        super().__init__(ServeConfig.model_validate(config), replica=replica)

    def __serve_build_asgi_app__(self):
        return create_app(self)

    def check_health(self) -> None:
        """Serve replaces a replica whose model failed to load; /health reports why meanwhile."""
        failed = {name: runner.load_error for name, runner in self.runners.items() if runner.load_error}
        if failed:
            raise RuntimeError(f"models failed to load: {failed}")


def deployment_options(config: ServeConfig) -> dict:
    resources = config.deployment
    options: dict = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus},
        "max_ongoing_requests": resources.max_ongoing_requests,
        "graceful_shutdown_timeout_s": resources.graceful_shutdown_timeout_s,
    }
    replicas = resources.replicas
    if replicas.min == replicas.max:
        options["num_replicas"] = replicas.min
    else:
        options["autoscaling_config"] = {
            "min_replicas": replicas.min,
            "max_replicas": replicas.max,
            "target_ongoing_requests": replicas.target_ongoing_requests,
        }
    return options


def build_application(config: ServeConfig) -> Application:
    deployment = serve.deployment(ServingReplica).options(**deployment_options(config))
    return deployment.bind(config.model_dump(mode="json"))
