"""Server reads that see every earlier write without Strong's wait: Milvus's Session consistency.

pymilvus keeps, per server and collection, the newest timestamp of the writes this process made, and a Session
read sends it as the read's guarantee timestamp: Milvus answers once it holds every write up to it (Milvus 2.3's
proxy keeps a Session read's timestamp as sent, and replaces a Strong read's with the newest one it issues,
``parseGuaranteeTsFromConsistency``, so every Strong read waits for the next time tick). Bounded, Milvus's
default, may miss a write made up to a few seconds earlier.

Two gaps are closed here. A Milvus 2.3 server answers a delete with no timestamp (0), so after a delete the
floor is raised to this host's clock as a hybrid timestamp: it covers the delete as long as this host's clock is
not behind the server's (Milvus's timestamp oracle counts its own clock's milliseconds). And another process's
writes (another store replica's) are seen once their timestamp is handed over (:meth:`SessionClock.read_after`).
"""

from __future__ import annotations

import time

from pymilvus import MilvusClient, mkts_from_unixtime
from pymilvus.client import ts_utils

SESSION_READS = {"consistency_level": "Session"}
"""How a server is read (Milvus Lite is always up to date and takes no level)."""


class SessionClock:
    """The timestamps Session reads of one server wait for, one per collection, shared by every client of that
    server in this process (pymilvus keeps them per process, and only ever raises them)."""

    def __init__(self, client: MilvusClient):
        self._address = client._get_connection().server_address  # pymilvus's key for the server's timestamps

    def last_write(self, name: str) -> int:
        """The timestamp of the newest write to ``name`` that this process's reads see (0: none)."""
        return ts_utils.get_collection_ts(name, self._address, "")

    def deleted(self, name: str) -> None:
        """After a delete from ``name`` returned: reads see it (the server gave it no timestamp)."""
        self.read_after(name, mkts_from_unixtime(time.time()))

    def read_after(self, name: str, timestamp: int) -> None:
        """Reads of ``name`` from now on see every write up to ``timestamp`` (a :meth:`last_write` of another
        process); an older one changes nothing."""
        ts_utils.update_collection_ts(name, timestamp, self._address, "")
