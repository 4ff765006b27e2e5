"""A re-embedding job as every layer sees it: its vocabulary (states, phases, directions), the evaluation
it is asked for, the gate and bridge results it reports, and its record.

Defined once, here, so that the worker that advances a job, the store that keeps it, the HTTP schema
that shows it and the CLI that follows it cannot drift apart: a state or phase is a ``Literal`` that
pydantic checks where a record is built or changed and that ``/openapi.json`` lists as an enum. The
record crosses every hop typed (worker → store → request side); it becomes a dict only where the store
writes it to disk (:class:`~rayprism.platform.store.changes.JobRecords`).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from rayprism.platform.bridge import BridgeMethod, BridgeQuality
from rayprism.platform.config.base import Integer
from rayprism.platform.constants import GATE_SAMPLE

Direction = Literal["forward", "rollback"]
"""``forward``: to a new model, through the evaluation gate; ``rollback``: back to the collection a forward job
moved the alias from, replaying the writes made since its swap."""
RecordState = Literal["running", "done", "refused", "failed"]
"""What a job's record says: ``refused`` by the evaluation gate, ``failed`` with an ``error``."""
State = Literal[RecordState, "interrupted"]
"""What a caller sees: a record's state, or ``interrupted`` for a running job whose worker is gone."""
Phase = Literal["copying", "following", "evaluating", "swapping", "swapped", "evaluated"]
"""Where a job is: copying documents, following (replaying the writes made meanwhile), evaluating (the
gate), swapping (holding writes back for the last replay), then swapped, or evaluated (and refused)."""
GateMetric = Literal["mrr@10", "top10_agreement"]


class _Typed(BaseModel):
    """Field docstrings reach the schema; an assignment is checked like a construction."""

    model_config = ConfigDict(use_attribute_docstrings=True, validate_assignment=True)


class EvaluationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr = Field(min_length=1)
    relevant: list[StrictStr | Integer] = Field(min_length=1)
    """Ids of the documents that answer ``query``."""


class Evaluation(BaseModel):
    """The gate a re-embedding passes before its alias moves."""

    model_config = ConfigDict(extra="forbid")
    queries: list[EvaluationQuery] | None = Field(default=None, min_length=1, max_length=10_000)
    """Queries with known relevant ids: the gate is MRR@10 of the new collection. Without: the mean share
    of the old index's top-10 that the new one finds, with sampled stored documents as queries."""
    min_score: float | None = Field(default=None, ge=0, le=1)
    """Refuse the swap below this score. Default: 0.95 × the old collection's MRR@10 with queries,
    0.4 top-10 agreement without."""
    sample: Integer = Field(default=GATE_SAMPLE, ge=1, le=5_000)
    """Stored documents used as queries by the agreement gate."""


class Gate(_Typed):
    """The evaluation a forward job passed or failed: its swap waits on ``passed``."""

    metric: GateMetric
    queries: int
    """Queries scored: the query set's, or the sampled documents that found neighbours."""
    old: float | None = Field(default=None, exclude_if=lambda value: value is None)
    """The old collection's score (``mrr@10`` only)."""
    new: float
    threshold: float
    passed: bool


class BridgeAgreement(_Typed):
    top10_agreement: float
    """Share of the new model's own top-10 (in the new space) that the mapped query finds in the old."""
    rows: int


class BridgeReport(_Typed):
    """A forward job's bridge: a linear map from the new space to the old, fitted on sampled documents,
    and its quality on the held-out rest, against either endpoint."""

    method: BridgeMethod
    fit_rows: int
    against_old: BridgeQuality
    against_new: BridgeAgreement


def _first_phase(fields: dict[str, Any]) -> Phase:
    """A forward job copies the collection first; a rollback only replays the writes made since its swap."""
    return "copying" if fields["direction"] == "forward" else "following"


def _created(fields: dict[str, Any]) -> float:
    return fields["created"]


class JobProgress(_Typed):
    """What a job moves where and how far it got: the part of its record callers see, which the HTTP body
    (:class:`~rayprism.platform.api.responses.ReembedJob`) declares by extending it."""

    id: str
    alias: str
    source: str
    """The physical collection read (the one the alias reached when the job began)."""
    target: str
    """The physical collection written, where the alias moves on success."""
    model: str
    """The model the target is embedded by."""
    source_model: str
    direction: Direction
    phase: Phase = Field(default_factory=_first_phase)
    """copying, following (replaying writes made meanwhile), evaluating, swapping, swapped or evaluated."""
    documents_total: int | None = None
    documents_done: int = 0
    documents_embedded: int = 0
    """Documents embedded by the new model over every run (copies and replayed writes)."""
    embedded_this_run: int = 0
    changes_applied: int = 0
    """The position up to which the job has replayed the source's change log."""
    gate: Gate | None = None
    """The evaluation: metric, old and new score, threshold, passed."""
    bridge: BridgeReport | None = None
    """A linear map from the new space to the old, fitted on sampled documents, and its quality; until the
    swap it answers searches that ask for the new model (``"model"`` in the search body)."""
    error: str | None = None
    runs: int = 0
    """Times a worker took the job up (an interrupted job resumed runs again)."""
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=_created)
    rolls_back: str | None = None
    """A rollback's: the re-embedding it undoes."""


class ReembedRecord(JobProgress):
    """One job as the store keeps it: its progress, and what only the store and the worker read. The worker
    changes it through the store (``reembed_update``), each change checked here."""

    state: RecordState = "running"
    changes_start: int = 0
    """The position of the source's change log when the job began."""
    changes_pending: int = Field(default=0, exclude=True)
    """Counted by the store when it answers, never kept."""
    evaluation: Evaluation = Evaluation()
    batch_size: int
    worker: str
    """The name of the detached actor that runs it."""
