"""Model groups: models in a Serve deployment of their own, reached by the serving replicas through handles.

A group is for a model that needs its own resources (a GPU, a fraction of one) or is rarely used
(``replicas.min: 0``: it scales to zero when idle and back up on the first request). Inside, a
:class:`GroupReplica` holds its models exactly as a serving replica does (loading, batching,
metrics); on the serving side a :class:`~rayprism.deployments.remote_runner.RemoteRunner` stands where a local model runner would,
so the API, collections and errors treat both alike.
"""

from __future__ import annotations

import asyncio

from ray import serve

from rayprism.deployments.runner import ItemErrors, RerankScores
from rayprism.deployments.service import EmbeddingService
from rayprism.platform.config import ServeConfig
from rayprism.platform.config.serve import DeploymentConfig, GroupConfig
from rayprism.platform.constants import group_deployment_name
from rayprism.platform.models.base import Embeddings, Modality


class GroupReplica:
    """One replica of a model group: its models, each with its batcher, and nothing else."""

    def __init__(self, config: dict, group: str):
        serve_config = ServeConfig.model_validate(config)
        spec = next(g for g in serve_config.deployments if g.name == group)
        own = serve_config.model_copy(update={
            "models": [model for model in serve_config.models if model.name in spec.models],
            "deployment": DeploymentConfig(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus),
            "deployments": [], "collections": [], "seed": None,
        })
        self.service = EmbeddingService(own, replica=serve.get_replica_context().replica_id.unique_id)

    async def _loaded(self, model: str):
        """The model's runner once loading is over: a replica started by a request (from zero) makes
        that request wait for its models rather than fail it."""
        if not self.service.started():
            await asyncio.to_thread(self.service.wait_loaded)
        return self.service.runner(model, kind=None)

    async def describe(self, model: str) -> dict:
        """What the serving side needs to validate requests."""
        encoder = (await self._loaded(model)).encoder  # NotReadyError if it failed to load
        return {"dimensions": getattr(encoder, "dimensions", None), "max_input_tokens": encoder.max_input_tokens,
                "prompts": dict(getattr(encoder, "prompts", {})), "modalities": sorted(encoder.modalities)}

    async def embed(self, model: str, inputs: list, modality: Modality, prompt_name: str | None,
                    truncate: bool) -> Embeddings:
        return await (await self._loaded(model)).embed(inputs, modality, prompt_name, truncate=truncate)

    async def embed_each(self, model: str, inputs: list, modality: Modality) -> Embeddings | ItemErrors:
        return await (await self._loaded(model)).embed_each(inputs, modality)

    async def rerank(self, model: str, query: str, documents: list[str], truncate: bool) -> RerankScores:
        return await (await self._loaded(model)).rerank(query, documents, truncate=truncate)

    async def metrics(self) -> bytes:
        self.service.update_gauges()
        return self.service.metrics.exposition()

    def check_health(self) -> None:
        self.service.check_health()


def group_options(config: ServeConfig, group: GroupConfig) -> dict:
    replicas = group.replicas
    return {
        "name": group_deployment_name(group.name),
        "ray_actor_options": {"num_cpus": group.num_cpus, "num_gpus": group.num_gpus,
                              "resources": dict(group.resources)},
        "max_ongoing_requests": group.max_ongoing_requests,
        "health_check_period_s": config.deployment.health_check_period_s,
        "autoscaling_config": {
            "min_replicas": replicas.min, "max_replicas": replicas.max,
            "target_ongoing_requests": replicas.target_ongoing_requests,
            "downscale_delay_s": replicas.idle_s, "upscale_delay_s": 0,
        },
    }
