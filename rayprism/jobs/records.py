"""The records a batch job's driver and its encoder actors (:class:`~rayprism.jobs.worker.UnitWorker`)
exchange: typed on both sides, and light to import, so planning a job does not load the worker."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rayprism.platform.config import CollectionConfig, JobConfig


def service_embeds(job: JobConfig, collection: CollectionConfig | None) -> bool:
    """Whether the job's documents go without vectors to a service that cuts and embeds them itself: its collection
    is chunked, and its documents API takes whole documents, not pieces with their vectors (which only a Milvus
    the job writes itself can take). The service then also skips documents it holds unchanged."""
    return collection is not None and collection.chunking is not None and job.output.service_url is not None


@dataclass(frozen=True)
class WorkerSetup:
    """What every encoder actor of a job is built from, handed to it whole (Ray pickles it)."""

    job: JobConfig
    state_dir: str
    int8_ranges: np.ndarray | None
    collection: CollectionConfig | None
    """The collection the job writes, as its sink settled it; None without one."""
    writer: Any = None
    """How a unit's rows reach the collection (:mod:`rayprism.jobs.sink`): the one sink actor, or the worker's own
    connection to a Milvus server; None without a collection."""


@dataclass(frozen=True)
class ServerWrite:
    """Who wrote a unit's rows into a Milvus server, kept in the unit's done record: the worker's process, and
    the server's timestamp of that write, which the job's closing count waits for (the closing process made no
    write itself, so its reads would not otherwise wait for any)."""

    pid: int
    timestamp: int


@dataclass(frozen=True)
class UnitReport:
    """What a worker reports of one unit: what it finished, or why the job must stop (``failure``).
    Ray Data carries reports as rows of columns; :meth:`columns` and :meth:`from_row` are that crossing."""

    unit: str
    rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    failure: str = ""

    @staticmethod
    def columns(reports: list[UnitReport]) -> dict[str, np.ndarray]:
        return {name: np.array([getattr(report, name) for report in reports]) for name in _REPORT_FIELDS}

    @classmethod
    def from_row(cls, row: dict) -> UnitReport:
        return cls(unit=str(row["unit"]), rows=int(row["rows"]), errors=int(row["errors"]),
                   seconds=float(row["seconds"]), failure=str(row["failure"]))


_REPORT_FIELDS = tuple(report_field.name for report_field in fields(UnitReport))
