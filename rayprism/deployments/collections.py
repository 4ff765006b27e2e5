"""Collections and aliases on the serving replica: create, describe, drop, point; and the config each
request resolves its collection name to, which the documents, search and re-embedding services share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Callable, Iterator

from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store_client import Store
from rayprism.platform.api.requests import AliasRequest
from rayprism.platform.api.responses import (
    Alias,
    AliasDeleted,
    AliasList,
    CollectionDeleted,
    CollectionDescription,
    CollectionList,
)
from rayprism.platform.codecs.muvera import FDEConfig
from rayprism.platform.config import CollectionConfig, SearchDefaults
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, RayprismError
from rayprism.platform.store.tokens import fde_config

STORE_HEALTH_TIMEOUT_S = 2.0
SEARCH_DEFAULTS_REFRESH_S = 1.0
"""How long a replica uses a collection's search defaults before asking the store again: defaults applied
through another replica are in use everywhere within this (at once on the replica that applied them)."""


def _differences(requested: CollectionConfig, existing: CollectionConfig) -> list[str]:
    """One line per top-level key that differs: ``key: requested <x>, existing <y>``. Search defaults count only
    when the request gives some (``existing``'s are those in use, maybe applied since it was made)."""
    ignored = {"uri"} if requested.search_defaults is not None else {"uri", "search_defaults"}
    wanted, found = requested.model_dump(exclude=ignored), existing.model_dump(exclude=ignored)
    return [f"{key}: requested {wanted[key]!r}, existing {found[key]!r}"
            + (" (PUT .../search_defaults changes them)" if key == "search_defaults" else "")
            for key in wanted if wanted[key] != found[key]]


class CollectionsService:
    def __init__(self, embeddings: EmbeddingService, store: Store):
        """``store``: the store deployment through its client, or a store replica in this process."""
        self._embeddings = embeddings
        self._store = store
        self._known: dict[str, CollectionConfig] = {}
        self._reached: dict[str, str] = {}
        """The physical collection each alias last resolved to: what its requests are labelled by."""
        self._defaults: dict[str, tuple[SearchDefaults | None, float]] = {}
        """Each physical collection's search defaults in use, and when they were read (``time.monotonic``)."""

    @contextlib.contextmanager
    def forgotten_if_gone(self, name: str) -> Iterator[None]:
        """A collection the store no longer has is forgotten here too."""
        try:
            yield
        except NotFoundError:
            self._known.pop(name, None)
            raise

    async def store_problem(self, timeout_s: float = STORE_HEALTH_TIMEOUT_S) -> str | None:
        """Why the store cannot serve right now, or None when it answers."""
        try:
            await asyncio.wait_for(self._store.ping(), timeout_s)
        except asyncio.TimeoutError:
            return f"the store did not answer within {timeout_s:g} s (restarting?)"
        except RayprismError as error:
            return error.message
        return None

    async def warm(self, name: str) -> None:
        """Have the store pay now for what the first search of ``name`` would (see ``MilvusStore.warm``)."""
        await self._store.warm(name)

    def model_of(self, name: str) -> str | None:
        known = self._known.get(name) or self._known.get(self._reached.get(name, ""))
        return known.model if known else None

    async def collection(self, name: str) -> CollectionConfig:
        """The config of the collection ``name`` reaches now, created in Milvus on first use. Its
        ``name`` is the physical collection's: a request resolves an alias once, here, and makes
        every store call with that name, so a repointed alias never mixes two collections (or two
        models) in one answer. Physical names are remembered; aliases are asked for each time."""
        known = self._known.get(name)
        if known is None:
            physical = await self._store.target(name)
            if physical != name:
                self._reached[name] = physical
            known = self._known.get(physical)
            if known is None:
                known = await self.ensure(CollectionConfig.model_validate(await self._store.resolve(physical)))
        return known

    async def ensure(self, config: CollectionConfig) -> CollectionConfig:
        runner = self._embeddings.runner(config.model)
        await runner.ready()
        if config.modality not in runner.encoder.modalities:
            raise InvalidInputError(f"model {config.model!r} embeds {sorted(runner.encoder.modalities)}, "
                                    f"not {config.modality}", param="modality")
        dimensions = self.fde(config).output_dim if config.multivector else runner.encoder.dimensions
        ensured = CollectionConfig.model_validate(
            await self._store.ensure(config.model_dump(mode="json"), dimensions)
        )
        self._known[config.name] = ensured
        return ensured

    def fde(self, config: CollectionConfig) -> FDEConfig:
        """A multi-vector collection's MUVERA encoding, for its model's token vectors."""
        runner = self._embeddings.runner(config.model)
        if not runner.gives_tokens:
            raise InvalidInputError(f"collection {config.name!r} is multivector, but model {config.model!r} gives no "
                                    "token vectors: it needs a transformer model served in this replica by the "
                                    "torch backend", param="multivector")
        return fde_config(config.multivector.fde.model_dump(), runner.encoder.token_dimensions)

    # --- collections -------------------------------------------------------------------

    async def list(self, shown: Callable[[str], bool]) -> CollectionList:
        """The collections whose names ``shown`` accepts (those the caller's key may read)."""
        names = [name for name in await self._store.names() if shown(name)]
        return CollectionList(object="list", data=[await self.describe(name) for name in names])

    async def describe(self, name: str) -> CollectionDescription:
        return CollectionDescription(object="collection", **(await self._store.describe(name)))

    async def create(self, config: CollectionConfig) -> tuple[CollectionDescription, bool]:
        """(description, created): an identical existing collection is fine, a different one a 409.

        Collections made over the API live in the service's own store: which file or server a
        collection lives in is the operator's choice (``collections:`` in the config), never a caller's.
        """
        if config.uri is not None:
            raise InvalidInputError(
                "uri cannot be chosen over the API: collections created here live in the service's store; "
                "declare a collection in another store under collections: in the service's config", param="uri"
            )
        if config.model not in self._embeddings.runners:
            raise InvalidInputError(
                f"model {config.model!r} is not served here; models: {sorted(self._embeddings.runners)}", param="model"
            )
        try:
            existing = CollectionConfig.model_validate(await self._store.resolve(config.name))
            existed = (await self._store.describe(config.name))["created"]
        except NotFoundError:
            existing, existed = None, False
        if existing is not None:
            differences = _differences(config, existing)
            if differences:
                raise ConflictError(f"collection {config.name!r} exists with a different config: {'; '.join(differences)}")
        await self.ensure(config)
        description = await self.describe(config.name)
        description["created"] = not existed
        return description, not existed

    async def drop(self, name: str) -> CollectionDeleted:
        self._known.pop(name, None)
        self._defaults.pop(name, None)
        await self._store.drop(name)
        return CollectionDeleted(object="collection.deleted", name=name, deleted=True)

    # --- search defaults -----------------------------------------------------------------

    async def search_defaults(self, physical: str) -> SearchDefaults | None:
        """The search defaults of the collection ``physical`` (a name :meth:`collection` resolved), read from the
        store at most every :data:`SEARCH_DEFAULTS_REFRESH_S`; meanwhile, and while a read is under way, the last
        ones read."""
        known = self._defaults.get(physical)
        now = time.monotonic()
        if known is not None and now - known[1] < SEARCH_DEFAULTS_REFRESH_S:
            return known[0]
        if known is not None:
            self._defaults[physical] = (known[0], now)  # concurrent searches keep these while one reads
        try:
            block = await self._store.search_defaults(physical)
        except BaseException:
            self._defaults.pop(physical, None)
            raise
        defaults = SearchDefaults.model_validate(block) if block is not None else None
        self._defaults[physical] = (defaults, time.monotonic())
        return defaults

    async def apply_search_defaults(self, name: str, defaults: SearchDefaults | None) -> CollectionDescription:
        """Make ``defaults`` the search defaults of the collection ``name`` reaches, in place of its config's (None:
        remove applied ones, the config's are in use again); checked against the collection and the served
        rerankers first. The collection as described after."""
        config = await self.collection(name)
        if defaults is not None:
            problem = config.search_defaults_problem(defaults)
            if problem:
                raise InvalidInputError(problem, param=problem.split(" ", 1)[0].removeprefix("search_defaults."))
            if defaults.rerank is not None:
                self._embeddings.runner(defaults.rerank.model, "reranker")  # unless it is served: 404 (or 400)
        with self.forgotten_if_gone(config.name):
            await self._store.apply_search_defaults(
                config.name, defaults.model_dump(mode="json") if defaults is not None else None)
        self._defaults.pop(config.name, None)
        return await self.describe(name)

    # --- aliases -----------------------------------------------------------------------

    async def list_aliases(self, shown: Callable[[str], bool]) -> AliasList:
        """The aliases whose names ``shown`` accepts (those the caller's key may read)."""
        table = await self._store.aliases()
        return AliasList(object="list", data=[Alias(object="alias", name=alias, collection=table[alias])
                                              for alias in sorted(table) if shown(alias)])

    async def point_alias(self, request: AliasRequest) -> tuple[Alias, bool]:
        """(description, created): the alias made, or repointed in one step (a search in flight
        answers wholly from the collection it resolved)."""
        previous = await self._store.point_alias(request.name, request.collection)
        self._reached[request.name] = (await self.collection(request.collection)).name  # for its metrics label
        return Alias(object="alias", name=request.name, collection=request.collection,
                     previous=previous), previous is None

    async def drop_alias(self, name: str) -> AliasDeleted:
        collection = await self._store.drop_alias(name)
        return AliasDeleted(object="alias.deleted", name=name, collection=collection, deleted=True)
