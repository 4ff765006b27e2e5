"""`rayprism embed JOB.yaml`: plan the units, then run the unfinished ones on Ray Data.

Planning needs no Ray: a finished job is recognised from its state directory and
does no work at all. Execution streams unit descriptions through an autoscaling
pool of encoder actors (:class:`~rayprism.jobs.worker.UnitWorker`); each actor
reads its unit itself, so vectors never travel through the object store except
on their way to the job's one sink actor. Into a Milvus server each actor writes
its rows itself, in parallel (:mod:`rayprism.jobs.sink`).
"""

from __future__ import annotations

import logging
import operator
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from rayprism.jobs.readers import (
    Unit,
    document_files,
    file_signature,
    input_files,
    media_files,
    plan_units,
    read_unit,
    write_files_manifest,
    write_manifest,
)
from rayprism.jobs.records import UnitReport, WorkerSetup, service_embeds
from rayprism.jobs.state import JobState
from rayprism.platform.codecs.quantize import calibrate_int8, ranges_from_json, ranges_to_json
from rayprism.platform.config import CollectionConfig, ComputeConfig, JobConfig, JobModelConfig
from rayprism.platform.config.jobs import FILES_FORMAT, MEDIA_FORMATS
from rayprism.platform.errors import ConfigError, RayprismError, unwrap
from rayprism.platform.files import write_atomically
from rayprism.platform.models.base import Encoder

DEFAULT_JOBS_DIR = Path("data") / "jobs"


@dataclass
class JobPlan:
    job: JobConfig
    state: JobState
    units: list[Unit]
    todo: list[Unit]


@dataclass
class JobSummary:
    units: int
    units_run: int
    rows: int
    """Rows embedded and written by this run."""
    errors: int
    """Rows rejected by this run."""
    rows_total: int
    errors_total: int
    seconds: float
    outputs: list[str] = field(default_factory=list)
    errors_file: str | None = None
    collection_count: int | None = None
    worker_deaths: int = 0
    """Encoder actors that died during this run (their unfinished units ran again)."""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def state_directory(job: JobConfig) -> Path:
    output = job.output
    if output.state_dir:
        return Path(output.state_dir)
    if output.parquet:
        return Path(output.parquet)
    return DEFAULT_JOBS_DIR / output.collection_name


def fingerprint(job: JobConfig, files: list[str]) -> dict:
    """Everything that changes a job's results; progress recorded under another fingerprint is refused."""
    model = job.model
    collection = job.output.collection
    changed_by_user = {"prompt_name": model.prompt_name, "options": model.options.model_dump(exclude_defaults=True)}
    return {
        "input": [file_signature(path) for path in files],
        "format": job.input.resolved_format(),
        "id_field": job.input.id_field,
        "text_field": job.input.text_field,
        **job.input.model_dump(include={"modality", "media_field"}, exclude_none=True),
        **({"sidecar": file_signature(job.input.sidecar)} if job.input.sidecar else {}),
        "model": {
            "source": model.source, "backend": model.backend, "max_input_tokens": model.max_input_tokens,
            **{key: value for key, value in changed_by_user.items() if value},
        },
        "codecs": [codec if isinstance(codec, str) else codec.model_dump() for codec in job.codecs],
        "rows_per_part": job.compute.rows_per_part,
        "collection": collection if isinstance(collection, str) or collection is None else collection.model_dump(),
        "uri": job.output.store_uri if collection is not None and not job.output.service_url else None,
        **({"service_url": job.output.service_url} if job.output.service_url else {}),
    }


def plan(job: JobConfig) -> JobPlan:
    form = job.input.resolved_format()
    state = JobState(state_directory(job))
    if form in MEDIA_FORMATS:  # one row per file, read through a manifest of the files planned here
        root, files = media_files(job.input.path, form)
        state.claim(fingerprint(job, files))
        files = [write_manifest(state.directory, root, files, job.input.item_field(), job.input.sidecar)]
    elif form == FILES_FORMAT:  # the same, for documents: the manifest also holds their ids and formats
        documents = document_files(job.input.path)
        state.claim(fingerprint(job, [str(source.path) for source in documents]))
        files = [write_files_manifest(state.directory, documents, job.input.text_field)]
    else:
        files = input_files(job.input.path)
        state.claim(fingerprint(job, files))
    units = plan_units(files, form, job.compute.rows_per_part)
    return JobPlan(job, state, units, [unit for unit in units if not state.is_done(unit.id)])


def _calibration_inputs(job: JobConfig, units: list[Unit], limit: int) -> list:
    """The first ``limit`` inputs of the job's modality: texts, or image/audio items."""
    key = job.input.item_field() or job.input.text_field
    inputs: list = []
    for unit in units:
        for raw in read_unit(unit, job.input.resolved_format()):
            value = (raw.record or {}).get(key)
            if isinstance(value, bytes) or isinstance(value, str) and value.strip():
                inputs.append(value)
                if len(inputs) == limit:
                    return inputs
    return inputs


Result = TypeVar("Result")


def on_encoder(job: JobConfig, work: Callable[[Encoder], Result]) -> Result:
    """``work(encoder)`` with the job's model loaded, once, in a Ray task placed as its encoder actors are (the
    driver may have no room for the model, or no GPU)."""
    import ray

    from rayprism.jobs.worker import encoder_config

    compute = job.compute
    task = ray.remote(num_cpus=compute.num_cpus, num_gpus=compute.num_gpus, resources=dict(compute.resources))
    return ray.get(task(_with_encoder).remote(encoder_config(job), work))


def _with_encoder(model: JobModelConfig, work: Callable[[Encoder], Result]) -> Result:
    from rayprism.platform.models.registry import load_encoder

    return work(load_encoder(model))


def _calibrated(encoder: Encoder, inputs: list, modality: str, prompt_name: str | None) -> np.ndarray:
    from rayprism.jobs.worker import prepare_inputs

    return calibrate_int8(encoder.encode(prepare_inputs(encoder, inputs, modality, prompt_name)[0]))


def int8_ranges(job_plan: JobPlan) -> np.ndarray | None:
    """Loaded from the state directory, or calibrated once on the input's first rows and saved there."""
    if "int8" not in job_plan.job.codecs:
        return None
    if job_plan.state.int8_ranges_path.exists():
        return ranges_from_json(job_plan.state.int8_ranges_path.read_bytes())
    job = job_plan.job
    inputs = _calibration_inputs(job, job_plan.units, job.int8_calibration_rows)
    ranges = on_encoder(job, partial(_calibrated, inputs=inputs, modality=job.input.resolved_modality(),
                                     prompt_name=job.model.prompt_name))
    write_atomically(job_plan.state.int8_ranges_path, ranges_to_json(ranges))
    return ranges


def _check_collection(job: JobConfig, collection: CollectionConfig) -> None:
    """The job's rows fit the collection: its modality, one dense vector per document (or per piece), and
    vectors to write where a parquet output needs them."""
    if collection.multivector is not None:
        raise ConfigError(f"collection {collection.name!r} is multivector: its documents need token vectors, which "
                          "batch jobs do not compute; upsert them through the service's document API")
    modality = job.input.resolved_modality()
    if collection.modality != modality:
        raise ConfigError(f"collection {collection.name!r} holds {collection.modality} documents; this job embeds "
                          f"{modality} (a collection spec with modality: {modality} makes one that fits)")
    if service_embeds(job, collection) and job.output.parquet:
        raise ConfigError(f"collection {collection.name!r} of the service at {job.output.service_url} is chunked: the "
                          "service cuts and embeds the documents the job sends, so the job has no vectors for "
                          "output.parquet; write the parquet in a job of its own (or into a Milvus Lite output.uri)")


class JobFailedError(RayprismError):
    """A unit could not be finished: a bad row with ``on_error: fail``, the store refused, or the
    encoder workers kept dying."""


WORKER_DEATHS_TOLERATED = 3
"""Encoder actors one run may lose (OOM kill, lost node) and go on; after each loss the units still
unfinished run again on fresh actors."""


def connect(address: str | None = None, *, verbose: bool = False) -> None:
    """Start (or join) Ray for ``rayprism embed``, which then calls :func:`execute`. Without ``verbose``,
    Ray Data's own progress and log lines stay in Ray's log folder (:func:`quiet_ray_data`)."""
    from rayprism.platform.ray_runtime import start_ray

    start_ray(address, verbose=verbose)
    if not verbose:
        quiet_ray_data()


def quiet_ray_data() -> None:
    """Turn off Ray Data's progress bars and execution banners, and detach the console handler it gives
    the ``ray.data`` logger on import; its file handlers (``ray-data.log`` in Ray's log folder) keep
    every record, at the DEBUG level Ray Data's own logging config sets (``start_ray``'s quieting had
    raised it to ERROR, which would starve the file too)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logger = logging.getLogger("ray.data")
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)


def execute(job_plan: JobPlan, *, on_unit: Callable[[UnitReport], None] | None = None) -> JobSummary:
    """Run the unfinished units on the Ray this process is connected to; ``on_unit`` hears of each
    unit as it finishes. The counts returned are read back from the state directory, so a unit that
    finished just before a worker died is counted once, as it was written."""
    import ray

    job, state = job_plan.job, job_plan.state
    started = time.perf_counter()
    sink, collection = _open_sink(job)
    collection_count = None
    try:
        setup = WorkerSetup(job, str(state.directory), int8_ranges(job_plan), collection, _writer(job, sink))
        worker_deaths = _embed_units(job_plan, setup, on_unit or (lambda report: None))
    finally:
        if sink is not None:
            collection_count = ray.get(sink.close.remote(state.last_server_write()))
            ray.kill(sink)
    rows, errors = state.totals([unit.id for unit in job_plan.todo])
    rows_total, errors_total = state.totals()
    outputs = [str(Path(job.output.parquet).resolve())] if job.output.parquet else []
    if job.output.collection is not None:
        outputs.append(f"{job.output.service_url or job.output.store_uri} :: {job.output.collection_name}")
    errors_file = state.merge_errors()
    return JobSummary(
        units=len(job_plan.units), units_run=len(job_plan.todo), rows=rows, errors=errors,
        rows_total=rows_total, errors_total=errors_total, seconds=time.perf_counter() - started,
        outputs=outputs, errors_file=str(errors_file) if errors_file else None, collection_count=collection_count,
        worker_deaths=worker_deaths,
    )


def _open_sink(job: JobConfig) -> tuple[Any, CollectionConfig | None]:
    """The actor that writes the job's collection and the collection's config (both None without one);
    a collection the job's rows do not fit is refused here, before any unit runs. When the workers write
    into a server themselves, the collection is also made (or checked) here, once, for the model's
    dimensions: workers never race to create it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rayprism.jobs.sink import MilvusSink, ServiceSink

    output = job.output
    if output.collection is None:
        return None, None
    spec = None if isinstance(output.collection, str) else output.collection
    sink_class, target = (ServiceSink, output.service_url) if output.service_url else (MilvusSink, output.store_uri)
    # On this node: a Milvus Lite file is on this machine's disk, and a cluster may lose any other node.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    sink = ray.remote(num_cpus=0, scheduling_strategy=here)(sink_class).remote(
        target, output.collection_name, spec, job.model.name)
    try:
        collection = ray.get(sink.open.remote())
        _check_collection(job, collection)
        if output.workers_write:
            ray.get(sink.ensure.remote(on_encoder(job, operator.attrgetter("dimensions"))))
    except Exception as error:
        ray.kill(sink)
        raise unwrap(error) or error from None
    return sink, collection


def _writer(job: JobConfig, sink: Any) -> Any:
    """What the workers write the job's rows with (:mod:`rayprism.jobs.sink`); None without a collection."""
    from rayprism.jobs.sink import ServerWriter, SinkWriter

    if sink is None:
        return None
    return ServerWriter(job.output.store_uri, job.output.collection_name) if job.output.workers_write else SinkWriter(sink)


def _embed_units(job_plan: JobPlan, setup: WorkerSetup, on_unit: Callable[[UnitReport], None]) -> int:
    """Stream the unfinished units through the encoder actors; returns how many were lost on the way.
    Ray does not restart them (see :func:`unit_dataset`): a death ends the dataset, and the units the
    state directory does not record as finished run again on fresh actors."""
    import ray

    from rayprism.jobs.worker import UnitWorker

    todo, deaths = job_plan.todo, 0
    while todo:
        try:
            for row in unit_dataset(todo, UnitWorker, setup, setup.job.compute).iter_rows():
                on_unit(_unit_done(row))
            return deaths
        except ray.exceptions.RayActorError as error:  # died, or unreachable: either way not restarted
            deaths += 1
            todo = [unit for unit in todo if not job_plan.state.is_done(unit.id)]
            if deaths > WORKER_DEATHS_TOLERATED:
                reason = str(error).splitlines()[0]
                raise JobFailedError(
                    f"encoder workers were lost {deaths} times (the last: {reason}); {len(job_plan.todo) - len(todo)} "
                    f"units finished and are kept: run the same command again to finish the other {len(todo)}"
                ) from error
    return deaths


def unit_dataset(units: list[Unit], worker: type, setup: Any, compute: ComputeConfig):
    """One row per unit, mapped by an autoscaling pool of ``worker`` actors (built from ``setup``: a
    :class:`UnitWorker`, or a batch's :class:`~rayprism.jobs.batches.BatchUnitWorker`) into one report row
    per unit. The actors run with ``max_restarts=0``: Ray Data hands them their constructor arguments (its
    own map function and context, whatever the job passes) as object-store references, and for such a
    restartable actor Ray logs an ERROR line on every job, since its restart fails once those objects are
    lost (ray-project/ray#53727). The job redoes a dead actor's units itself (:func:`_embed_units`),
    exactly, from its state directory.

    Ray Data 2.60 takes ``max_restarts`` only among its generic ``ray_remote_args``, deprecated for
    removal in 2.64 (the pin in pyproject.toml is < 2.61): that one deprecation warning is silenced here."""
    import ray
    from ray.util.annotations import RayDeprecationWarning

    dataset = ray.data.from_items([unit.to_dict() for unit in units], override_num_blocks=len(units))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", RayDeprecationWarning)
        return dataset.map_batches(
            worker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(min_size=compute.min_actors, max_size=compute.max_actors),
            num_cpus=compute.num_cpus,
            num_gpus=compute.num_gpus,
            resources=dict(compute.resources),
            fn_constructor_args=(setup,),
            max_restarts=0,
        )


def _unit_done(row: dict) -> UnitReport:
    """A worker's report row as a record; a unit that had to stop the job (``on_error: fail``) stops it here."""
    report = UnitReport.from_row(row)
    if report.failure:
        raise JobFailedError(report.failure)
    return report
