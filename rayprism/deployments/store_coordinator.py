"""What several store replicas of one Milvus server must agree on, kept in one process.

With ``store.replicas`` > 1 (a server only) searches and writes spread over the store replicas, and each of
them asks this deployment (one replica) for what must be single:

- the collection a name reaches: the alias table lives here, and every alias change is made here (a
  replica's own table would miss the others' changes);
- the newest write of each collection: a replica hands over its write's timestamp before the write is
  answered, and gets the newest before each read, so a write through one replica is seen by the next read
  through any other (:mod:`~rayprism.platform.store.session_reads`);
- re-embedding's ledger (:class:`~rayprism.deployments.store_reembed.ReembedLedger`): job records, change logs,
  the write freeze, and the swap lock that each write holds from :meth:`StoreCoordinator.write_begin` to
  :meth:`StoreCoordinator.write_end`, so a swap sees every write wholly before it or wholly after; and a
  snapshot's watch and hold of one collection's writes (:meth:`StoreCoordinator.writes_hold`);
- the store replicas' metrics, which each reports here for /metrics.

Its calls are small (a table look-up per read, two per write): the Milvus calls, the results and their
conversion stay in the replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from rayprism.deployments.metrics import merged_exposition
from rayprism.deployments.store import check_not_moved
from rayprism.deployments.store_reembed import ReembedLedger
from rayprism.platform.config import StoreConfig
from rayprism.platform.store.aliases import Aliases
from rayprism.platform.store.milvus import MilvusStore


class StoreCoordinator(ReembedLedger):
    def __init__(self, store: dict):
        config = StoreConfig.model_validate(store)
        self._milvus = MilvusStore(config.uri)  # for the alias table: the replicas make every other call
        self._open_ledger(config.uri)
        self._written: dict[str, int] = {}
        """Collection → the newest write timestamp a replica handed over."""
        self._leases = itertools.count()
        self._writes: dict[int, tuple[contextlib.AbstractContextManager, str]] = {}
        """Writes under way (lease → the swap lock's share each holds, and the collection it was admitted to)."""
        self._reports: dict[str, bytes] = {}

    def _aliases(self) -> Aliases:
        return self._milvus.aliases

    def _physical(self, name: str) -> str:
        return self._aliases().target(name)

    async def target(self, name: str) -> str:
        """The collection ``name`` reaches now."""
        return await asyncio.to_thread(self._physical, name)

    async def reading(self, name: str) -> tuple[str, int]:
        """The collection ``name`` reaches, and the newest write to it a read must see."""
        physical = await asyncio.to_thread(self._physical, name)
        return physical, self._written.get(physical, 0)

    async def write_begin(self, name: str, via: str | None) -> tuple[int, str]:
        """A write's lease and the collection it writes (as ``StoreReplica._write`` resolves it): it waits out a
        freeze, and holds the swap off until :meth:`write_end`."""
        admitted = await self._admitted(name)
        share = self._swap_lock.write()
        try:
            await asyncio.to_thread(share.__enter__)
            try:
                physical = self._physical(name)
                check_not_moved(self._physical, name, via, physical)
            except BaseException:
                share.__exit__(None, None, None)
                raise
        except BaseException:
            await self._write_ended(admitted, [])
            raise
        lease = next(self._leases)
        self._writes[lease] = (share, admitted)
        return lease, physical

    async def write_end(self, lease: int, physical: str, ids: list, timestamp: int) -> None:
        """The write of ``lease`` ended: its ids go into the collection's change log (none if it failed), its
        timestamp becomes what reads wait for, and the swap may go on."""
        share, admitted = self._writes.pop(lease)
        try:
            if ids:
                await asyncio.to_thread(self._changes.record, physical, ids)
            self._written[physical] = max(timestamp, self._written.get(physical, 0))
        finally:
            share.__exit__(None, None, None)
            await self._write_ended(admitted, ids)

    async def writes_watch(self, name: str) -> str:
        """Note the documents written to the collection ``name`` reaches from now on (a snapshot); returns it."""
        return await self._watch_writes(name)

    async def writes_hold(self, physical: str, seconds: float) -> list:
        """Hold new writes to ``physical`` back; returns the documents written since :meth:`writes_watch`."""
        await self._hold_writes(physical, seconds)
        return self._watched_ids(physical)

    async def writes_unwatch(self, physical: str) -> None:
        self._watched_ids(physical)

    async def writes_release(self, physical: str) -> bool:
        """End :meth:`writes_hold`; False if it had ended by itself."""
        return await self._release_writes(physical)

    async def aliases(self) -> dict[str, str]:
        return await asyncio.to_thread(self._aliases().table)

    async def point_alias(self, alias: str, collection: str) -> str | None:
        return await asyncio.to_thread(self._aliases().point, alias, collection)

    async def drop_alias(self, alias: str) -> str:
        return await asyncio.to_thread(self._aliases().remove, alias)

    async def report(self, replica: str, exposition: bytes) -> None:
        """A store replica's metrics, as of now."""
        self._reports[replica] = exposition

    async def exposition(self) -> bytes:
        """Every store replica's metrics, as each last reported them."""
        return merged_exposition(list(self._reports.values()))
