"""A batch of the OpenAI Batch API, run as a Ray Data job beside the service that took it.

The batch's input file is cut into units of ``batches.lines_per_unit`` lines (:func:`~rayprism.jobs.readers.plan_units`)
and streamed through a small pool of :class:`BatchUnitWorker` actors (:func:`~rayprism.jobs.embed.unit_dataset`, as
``rayprism embed`` streams its units). A worker checks each line of its unit, sends the unit's requests to the serving
replicas through a Serve handle, where ``/v1/embeddings``'s own code answers them with the models the replicas hold
(behind online requests: :mod:`rayprism.deployments.background`), and writes the unit's output and error lines whole
before it records the unit done (:class:`~rayprism.jobs.state.JobState`). A batch the service left half done when it
stopped is started again by the next service, and runs only the units not yet written.

The job's driver is a detached actor (:class:`BatchDriver`), the only writer of the batch's record: it moves the
batch through ``validating``, ``in_progress``, ``finalizing`` and ``completed`` (or ``cancelled``, ``failed``),
counts its lines as units finish, and at the end joins the parts into the output and error files.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rayprism.jobs.readers import Unit, file_signature, plan_units, read_unit
from rayprism.jobs.records import UnitReport
from rayprism.jobs.state import JobState
from rayprism.platform.batches import (
    Batch,
    BatchError,
    BatchErrors,
    BatchStore,
    answered_line,
    jsonl,
    refused_line,
    request_of,
)
from rayprism.platform.config import BatchesConfig, ComputeConfig
from rayprism.platform.constants import NAMESPACE, batch_driver_name
from rayprism.platform.files import write_atomically

logger = logging.getLogger(__name__)

WORKER_CPUS = 0.05
"""What a unit worker reserves: it only reads lines, waits on the replicas and writes JSON, and must find room
beside replicas that hold every CPU."""


@dataclass(frozen=True)
class BatchSetup:
    """What each unit worker of a batch is built from (Ray pickles it)."""

    state_dir: str
    app_name: str
    deployment: str
    repeated: frozenset[int]
    """Lines whose ``custom_id`` an earlier line has: refused, as OpenAI refuses them."""


def _out_part(state: JobState, unit_id: str) -> Path:
    return state.directory / "_out" / f"{unit_id}.jsonl"


class BatchUnitWorker:
    """Ray Data actor: called with a batch of unit descriptions, answers each unit's lines and reports it."""

    def __init__(self, setup: BatchSetup):
        from ray import serve

        self.state = JobState(setup.state_dir)
        self.repeated = setup.repeated
        self.service = serve.get_deployment_handle(setup.deployment, setup.app_name)

    async def __call__(self, batch: dict) -> dict:
        """Async, so Ray Data runs it in the actor's event loop, where the Serve handle's router lives."""
        return UnitReport.columns([await self.process(unit) for unit in Unit.from_batch(batch)])

    async def process(self, unit: Unit) -> UnitReport:
        import ray

        started = time.perf_counter()
        requests, errors = [], []
        for raw in read_unit(unit, "jsonl"):
            checked = request_of(raw.record, raw.error)
            if not isinstance(checked, str) and raw.row in self.repeated:
                checked = f"custom_id {checked[0]!r} is also an earlier line's: each line needs its own"
            if isinstance(checked, str):
                errors.append(refused_line((raw.record or {}).get("custom_id"), raw.row, checked))
            else:
                requests.append(checked)
        answers = await self.service.batch_lines.remote([body for _, body in requests]) if requests else []
        output = []
        for (custom_id, _), (status, body) in zip(requests, answers):
            line = answered_line(custom_id, status, body)
            (output if status == 200 else errors).append(line)
        write_atomically(_out_part(self.state, unit.id), jsonl(output))  # before the unit is done: never half
        self.state.mark_done(unit.id, len(output), errors, node=ray.get_runtime_context().get_node_id())
        return UnitReport(unit.id, len(output), len(errors), time.perf_counter() - started)


def repeated_custom_ids(path: Path) -> tuple[int, frozenset[int]]:
    """(request lines, the lines whose ``custom_id`` an earlier line has)."""
    seen: set = set()
    repeated, lines = set(), 0
    with open(path, encoding="utf-8") as handle:
        for row, line in enumerate(handle):
            if not line.strip():
                continue
            lines += 1
            try:
                custom_id = json.loads(line).get("custom_id")
            except (ValueError, AttributeError):  # reported per line by its worker
                continue
            if isinstance(custom_id, str):
                if custom_id in seen:
                    repeated.add(row)
                seen.add(custom_id)
    return lines, frozenset(repeated)


class BatchRun:
    """One run of a batch's job, from where its record and state directory say it is to its end."""

    def __init__(self, store: BatchStore, batch_id: str, settings: BatchesConfig, app_name: str, deployment: str):
        self.store, self.batch_id, self.settings = store, batch_id, settings
        self.names = (app_name, deployment)
        self.state = JobState(store.job_directory(batch_id))

    def _update(self, batch: Batch, **fields) -> Batch:
        batch = batch.model_copy(update=fields)
        self.store.save(batch)
        return batch

    def _counted(self, batch: Batch) -> Batch:
        completed, failed = self.state.totals()
        counts = batch.request_counts.model_copy(update={"completed": completed, "failed": failed})
        return self._update(batch, request_counts=counts)

    def run(self) -> Batch:
        batch = self.store.stored(self.batch_id)
        source = self.store.files.content_path(batch.input_file_id)
        lines, self.repeated = repeated_custom_ids(source)
        self.state.claim({"input": file_signature(str(source)), "lines_per_unit": self.settings.lines_per_unit})
        units = plan_units([str(source)], "jsonl", self.settings.lines_per_unit)
        if batch.status == "validating":
            batch = self._update(batch, status="in_progress", in_progress_at=int(time.time()),
                                 request_counts=batch.request_counts.model_copy(update={"total": lines}))
        todo = [unit for unit in units if not self.state.is_done(unit.id)]
        if todo and batch.status == "in_progress" and self.store.cancel_asked_at(self.batch_id) is None:
            batch = self._embed(batch, todo)
        return self._finish(batch, units)

    def _embed(self, batch: Batch, todo: list[Unit]) -> Batch:
        """Run the units; a unit worker lost on the way (an OOM kill, a lost node) costs its unit, run again on a
        fresh one, up to :data:`~rayprism.jobs.embed.WORKER_DEATHS_TOLERATED` times."""
        import ray

        from rayprism.jobs.embed import WORKER_DEATHS_TOLERATED

        deaths = 0
        while True:
            try:
                return self._stream(batch, todo)
            except ray.exceptions.RayActorError:
                deaths += 1
                if deaths > WORKER_DEATHS_TOLERATED:
                    raise
                todo = [unit for unit in todo if not self.state.is_done(unit.id)]

    def _stream(self, batch: Batch, todo: list[Unit]) -> Batch:
        from rayprism.jobs.embed import unit_dataset

        setup = BatchSetup(str(self.state.directory), *self.names, repeated=self.repeated)
        compute = ComputeConfig(min_actors=self.settings.workers, max_actors=self.settings.workers, num_cpus=WORKER_CPUS)
        rows = iter(unit_dataset(todo, BatchUnitWorker, setup, compute).iter_rows())
        try:
            for _ in rows:
                batch = self._counted(batch)
                if self.store.cancel_asked_at(self.batch_id) is not None:
                    break  # the units in flight are dropped with the dataset
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
        return batch

    def _finish(self, batch: Batch, units: list[Unit]) -> Batch:
        """Join the finished units' parts into the output and error files, and end the batch."""
        cancelled = self.store.cancel_asked_at(self.batch_id)
        batch = self._counted(batch)
        if cancelled is None:
            batch = self._update(batch, status="finalizing", finalizing_at=int(time.time()))
        parts = [_out_part(self.state, unit.id) for unit in units if self.state.is_done(unit.id)]
        output = self._joined(f"{batch.id}_output.jsonl", [part for part in parts if part.stat().st_size])
        errors_path = self.state.merge_errors()
        error_file = self._joined(f"{batch.id}_error.jsonl", [errors_path] if errors_path else [])
        now = int(time.time())
        ended = {"status": "cancelled", "cancelled_at": now, "cancelling_at": cancelled} if cancelled is not None else (
            {"status": "completed", "completed_at": now})
        return self._update(batch, output_file_id=output, error_file_id=error_file, **ended)

    def _joined(self, name: str, parts: list[Path]) -> str | None:
        """One file of the file store from ``parts``, copied in order (none: no file)."""
        if not parts:
            return None
        with tempfile.NamedTemporaryFile(dir=self.state.directory, suffix=".tmp", delete=False) as joined:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, joined)
        try:
            return self.store.files.adopt(name, "batch_output", Path(joined.name)).id
        finally:
            Path(joined.name).unlink(missing_ok=True)

    def fail(self, message: str) -> None:
        batch = self.store.stored(self.batch_id)
        self._update(batch, status="failed", failed_at=int(time.time()),
                     errors=BatchErrors(data=[BatchError(code="batch_failed", message=message)]))


class BatchDriver:
    """The detached actor that runs one batch's job (:class:`BatchRun`) and ends when the batch does."""

    def __init__(self, root: str, batch_id: str, settings: BatchesConfig, app_name: str, deployment: str):
        self._run = BatchRun(BatchStore(root), batch_id, settings, app_name, deployment)

    def run(self) -> None:
        import ray

        try:
            self._run.run()
        except Exception as error:
            if not self._service_running():  # stopping: the batch stays unfinished, for the next start to resume
                logger.warning("batch %s stopped with its service; the next start resumes it", self._run.batch_id)
                return
            logger.exception("batch %s failed", self._run.batch_id)  # its record says why, for GET
            self._run.fail(getattr(error, "message", None) or f"{type(error).__name__}: {error}")
        finally:
            ray.actor.exit_actor()

    def _service_running(self) -> bool:
        """Whether the application whose replicas answer the batch's lines still runs (not being deleted)."""
        from ray import serve

        try:
            application = serve.status().applications.get(self._run.names[0])
        except Exception:  # Serve's controller is gone: so is the service
            return False
        return application is not None and application.status == "RUNNING"


class BatchJobs:
    """Starts batches' jobs in the service's cluster. ``rayprism serve`` hands one to the serving replicas (the
    routes live in :mod:`rayprism.deployments`, which never imports this layer)."""

    def __init__(self, app_name: str, deployment: str):
        self._names = (app_name, deployment)

    def start(self, root: str, batch_id: str, settings: BatchesConfig) -> None:
        """Start the batch's driver unless it runs already (another replica may have started it)."""
        import ray

        options = dict(name=batch_driver_name(self._names[0], batch_id), namespace=NAMESPACE, lifetime="detached",
                       num_cpus=0, max_restarts=0)
        try:
            driver = ray.remote(BatchDriver).options(**options).remote(root, batch_id, settings, *self._names)
        except ValueError:  # its name is taken: it runs
            return
        driver.run.remote()
