"""A model of a group (see :mod:`~rayprism.deployments.groups`), as a serving replica sees it: the same
interface as a local model runner, its work done by the group's replicas through a Serve handle."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ray.exceptions import RayActorError

from rayprism.deployments.runner import ItemErrors, RerankScores
from rayprism.platform.config import ModelConfig
from rayprism.platform.config.serve import GroupConfig
from rayprism.platform.errors import NotReadyError, unwrap
from rayprism.platform.models.base import Embeddings, Modality


@dataclass(frozen=True)
class EncoderInfo:
    """A remote model's facts, as the serving side reads them from ``runner.encoder``."""

    dimensions: int | None
    """None for a reranker."""
    max_input_tokens: int
    prompts: dict[str, str]
    modalities: frozenset[str]


class RemoteRunner:
    """A model of a group, seen from a serving replica: the same interface as a local model runner."""

    load_error: str | None = None
    gives_tokens = False
    """Token vectors (multi-vector collections) come from models served in the ingress replica only."""

    def __init__(self, config: ModelConfig, group: GroupConfig, handle: Any):
        self.config = config
        self.name = config.name
        self.group = group
        self._handle = handle
        self._info: EncoderInfo | None = None
        self.last_used = 0.0

    @property
    def state(self) -> str:
        """``ready`` once its group has answered; ``idle`` for a group that starts on first use."""
        if self._info is not None:
            return "ready"
        return "idle" if self.group.replicas.min == 0 else "loading"

    @property
    def encoder(self) -> EncoderInfo:
        if self._info is None:
            raise NotReadyError(f"model {self.name!r} is starting in deployment {self.group.name!r}")
        return self._info

    def load(self) -> None:
        """Its group loads it; nothing to do here."""

    def close(self) -> None:
        """Nothing held here."""

    async def ready(self) -> None:
        if self._info is None:
            info = await self._call(self._handle.describe.remote(self.name))
            self._info = EncoderInfo(info["dimensions"], info["max_input_tokens"], info["prompts"],
                                     frozenset(info["modalities"]))  # its group reports model_ready itself

    async def embed(self, inputs: Sequence[Any], modality: Modality = "text", prompt_name: str | None = None, *,
                    truncate: bool = True) -> Embeddings:
        """Inputs and tokens are counted by the group that embeds them (its metrics join this replica's)."""
        return await self._call(self._handle.embed.remote(self.name, list(inputs), modality, prompt_name, truncate))

    async def embed_each(self, inputs: Sequence[Any], modality: Modality) -> Embeddings | ItemErrors:
        return await self._call(self._handle.embed_each.remote(self.name, list(inputs), modality))

    async def rerank(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> RerankScores:
        return await self._call(self._handle.rerank.remote(self.name, query, list(documents), truncate))

    async def _call(self, response) -> Any:
        """The group's answer, its own errors unwrapped; a group that cannot start in time is a 503."""
        self.last_used = time.monotonic()
        try:
            return await asyncio.wait_for(response, self.group.start_timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise NotReadyError(f"deployment {self.group.name!r} (model {self.name!r}) did not answer within "
                                f"{self.group.start_timeout_s:g} s; it may be starting", retry_after_s=10) from None
        except RayActorError:
            raise NotReadyError(f"deployment {self.group.name!r} is restarting; retry shortly") from None
        except Exception as error:
            raise unwrap(error) or error from None

    def recently_used(self) -> bool:
        """Whether its group likely has a replica now (asking would start one of an idle group)."""
        return self.group.replicas.min > 0 or time.monotonic() - self.last_used < self.group.replicas.idle_s

    async def metrics(self, timeout_s: float = 1.0) -> bytes | None:
        try:
            return await asyncio.wait_for(self._handle.metrics.remote(), timeout_s)
        except Exception:  # metrics are best effort: a busy or restarting group is left out
            return None
