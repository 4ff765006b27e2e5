"""Ray Serve wiring: the serving deployment and how config maps onto its options."""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve.deployment import Application

from rayprism.deployments.batch_routes import BatchLauncher, BatchService
from rayprism.deployments.collection_routes import CollectionServices
from rayprism.deployments.framing import answer_framing_errors_as_json
from rayprism.deployments.groups import GroupReplica, group_options
from rayprism.deployments.http import audit_settings, create_app
from rayprism.deployments.metrics import merged_exposition
from rayprism.deployments.reembed import ReembedJobs
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store_client import StoreClient, StoreDeployment
from rayprism.deployments.store_coordinator import StoreCoordinator
from rayprism.platform.config import ServeConfig, is_lite_uri
from rayprism.platform.constants import DEPLOYMENT_NAME, STORE_COORDINATOR_DEPLOYMENT_NAME, STORE_DEPLOYMENT_NAME
from rayprism.platform.errors import one_line

logger = logging.getLogger(__name__)


@serve.ingress()
class ServingReplica(EmbeddingService):
    """One replica: the HTTP app, and every model no group takes with its batcher, in one process."""

    def __init__(self, config: dict, store, groups: dict | None = None, batch_jobs: BatchLauncher | None = None):
        """``batch_jobs``: what starts the OpenAI Batch API's jobs (``rayprism serve`` and
        :mod:`rayprism.application` give one: this layer does not import :mod:`rayprism.jobs`); none: batches are refused."""
        answer_framing_errors_as_json()
        replica = serve.get_replica_context().replica_id.unique_id
        super().__init__(ServeConfig.model_validate(config), replica=replica, groups=groups or {})
        jobs = ReembedJobs(serve.get_replica_context().app_name, DEPLOYMENT_NAME, STORE_DEPLOYMENT_NAME,
                           audit_settings(self.config.server))
        self._store = StoreClient(store, self.metrics)
        self.stored = CollectionServices.build(self, self._store, jobs)
        self.batches = BatchService(self.config.batches, batch_jobs)
        self._startup_done = False

    async def finish_startup(self) -> None:
        """Once local models are loaded: wait for groups that keep replicas (not those that start on
        demand), then create or verify every declared collection, so a failure shows at start-up (in
        /health, and `rayprism serve` exits) rather than later, and warm each for its first search."""
        await asyncio.to_thread(self.wait_loaded)
        checks = [(f"model {runner.name}", runner.ready()) for runner in self.runners.values()
                  if runner.state == "loading" and runner.load_error is None]
        checks += [(f"collection {collection.name}", self.stored.collections.collection(collection.name))
                   for collection in self.config.collections if self.runners[collection.model].load_error is None]
        if is_lite_uri(self.config.store.uri):  # a Lite store that cannot open now never will: a server may be starting
            checks.append(("store", self._store.ping()))
        for subject, check in checks:
            try:
                await check
            except Exception as error:  # any failure must reach /health, or start-up would wait forever
                self.startup_errors[subject] = one_line(error)
        try:
            resumed = await self.batches.resume()
            if resumed:
                logger.info("resumed %d unfinished batch(es): %s", len(resumed), ", ".join(resumed))
        except Exception:  # the batches stay unfinished, and resume at the next start; serving goes on
            logger.warning("resuming unfinished batches failed", exc_info=True)
        for collection in self.config.collections:
            if f"collection {collection.name}" not in self.startup_errors:
                try:
                    await self.stored.collections.warm(collection.name)  # the first search as fast as the next
                except Exception:  # only slower first searches: not a reason to refuse to serve
                    logger.warning("warming collection %r failed", collection.name, exc_info=True)
        self._startup_done = True

    def started(self) -> bool:
        return super().started() and self._startup_done

    async def exposition(self) -> bytes:
        """This replica's metrics (and its groups'), and with several store replicas, each one's."""
        own, stores = await asyncio.gather(super().exposition(), self._store.metrics())
        return merged_exposition([own, stores]) if stores else own

    async def reembed_vectors(self, model: str, texts: list[str]):
        """For a re-embedding's worker (through this deployment's handle): documents embedded here."""
        return await self.stored.reembed.vectors(model, texts)

    async def reembed_search(self, collection: str, query: str, k: int) -> list:
        """For a re-embedding's evaluation gate: the ids a search answers."""
        return await self.stored.reembed.search_ids(collection, query, k)

    def __serve_build_asgi_app__(self):
        return create_app(self, self.stored, on_startup=self.finish_startup, batches=self.batches)


def deployment_options(config: ServeConfig) -> dict:
    resources = config.deployment
    options: dict = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus,
                              "resources": dict(resources.resources)},
        "max_ongoing_requests": resources.max_ongoing_requests,
        "graceful_shutdown_timeout_s": resources.graceful_shutdown_timeout_s,
        "health_check_period_s": resources.health_check_period_s,
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


def store_options(config: ServeConfig) -> dict:
    """``store.replicas`` store replicas: one for a Milvus Lite file (the config refuses more: a Lite file admits
    one process), as many as asked for a server."""
    return {"num_replicas": config.store.replicas, "ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": 256,
            "health_check_period_s": config.deployment.health_check_period_s}


def coordinator_options(config: ServeConfig) -> dict:
    """The one coordinator of several store replicas: every read and write of each asks it something small."""
    return {"name": STORE_COORDINATOR_DEPLOYMENT_NAME, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0},
            "max_ongoing_requests": 4096, "health_check_period_s": config.deployment.health_check_period_s}


def build_application(config: ServeConfig, batch_jobs: BatchLauncher | None = None) -> Application:
    dumped = config.model_dump(mode="json")
    store_config = config.store.model_dump(mode="json")
    coordinator = (serve.deployment(StoreCoordinator).options(**coordinator_options(config)).bind(store_config)
                   if config.store.replicas > 1 else None)
    store = StoreDeployment.options(**store_options(config)).bind(
        store_config, [c.model_dump(mode="json") for c in config.collections], coordinator
    )
    groups = {group.name: serve.deployment(GroupReplica).options(**group_options(config, group)).bind(dumped, group.name)
              for group in config.deployments}
    deployment = serve.deployment(ServingReplica).options(**deployment_options(config))
    return deployment.bind(dumped, store, groups, batch_jobs)
