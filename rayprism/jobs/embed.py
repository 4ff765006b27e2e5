"""`rayprism embed JOB.yaml`: plan the units, then run the unfinished ones on Ray Data.

Planning needs no Ray: a finished job is recognised from its state directory and
does no work at all. Execution streams unit descriptions through an autoscaling
pool of encoder actors (:class:`~rayprism.jobs.worker.UnitWorker`); each actor
reads its unit itself, so vectors never travel through the object store except
on their way to the one Milvus sink actor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rayprism.jobs.readers import (
    Unit,
    file_signature,
    input_files,
    media_files,
    plan_units,
    read_unit,
    write_manifest,
)
from rayprism.jobs.state import JobState
from rayprism.platform.codecs.quantize import calibrate_int8, ranges_from_json, ranges_to_json
from rayprism.platform.config import CollectionConfig, JobConfig
from rayprism.platform.config.jobs import MEDIA_FORMATS
from rayprism.platform.errors import ConfigError, RayprismError, unwrap
from rayprism.platform.files import write_atomically

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


def int8_ranges(job_plan: JobPlan) -> np.ndarray | None:
    """Loaded from the state directory, or calibrated once on the input's first rows and saved there."""
    import ray

    from rayprism.jobs.worker import encoder_config

    if "int8" not in job_plan.job.codecs:
        return None
    if job_plan.state.int8_ranges_path.exists():
        return ranges_from_json(job_plan.state.int8_ranges_path.read_bytes())
    job = job_plan.job
    inputs = _calibration_inputs(job, job_plan.units, job.int8_calibration_rows)

    @ray.remote(num_cpus=job.compute.num_cpus, num_gpus=job.compute.num_gpus)
    def calibrate(model: dict, inputs: list, modality: str) -> np.ndarray:
        from rayprism.jobs.worker import prepare_inputs
        from rayprism.platform.config import JobModelConfig
        from rayprism.platform.models.registry import load_encoder

        config = JobModelConfig.model_validate(model)
        encoder = load_encoder(config)
        return calibrate_int8(encoder.encode(prepare_inputs(encoder, inputs, modality, config.prompt_name)[0]))

    model = encoder_config(job).model_dump()
    ranges = ray.get(calibrate.remote(model, inputs, job.input.resolved_modality()))
    write_atomically(job_plan.state.int8_ranges_path, ranges_to_json(ranges))
    return ranges


def _check_collection(job: JobConfig, collection: CollectionConfig) -> None:
    """The job's rows fit the collection: its modality, and one dense vector per document."""
    if collection.multivector is not None:
        raise ConfigError(f"collection {collection.name!r} is multivector: its documents need token vectors, which "
                          "batch jobs do not compute; upsert them through the service's document API")
    modality = job.input.resolved_modality()
    if collection.modality != modality:
        raise ConfigError(f"collection {collection.name!r} holds {collection.modality} documents; this job embeds "
                          f"{modality} (a collection spec with modality: {modality} makes one that fits)")


class JobFailedError(RayprismError):
    """A unit could not be finished: a bad row with ``on_error: fail``, or the store refused."""


def run(job_plan: JobPlan, *, address: str | None = None, verbose: bool = False) -> JobSummary:
    """Start (or join) Ray, then :func:`execute`: what ``rayprism embed`` does."""
    from rayprism.platform.ray_runtime import start_ray

    start_ray(address, verbose=verbose)
    return execute(job_plan)


def execute(job_plan: JobPlan) -> JobSummary:
    """Run the unfinished units on the Ray this process is connected to."""
    import ray

    from rayprism.jobs.sink import MilvusSink, ServiceSink
    from rayprism.jobs.worker import UnitWorker

    job, state = job_plan.job, job_plan.state
    started = time.perf_counter()
    sink = collection = None
    if job.output.collection is not None:
        spec = None if isinstance(job.output.collection, str) else job.output.collection.model_dump(mode="json")
        output = job.output
        sink_class, target = (ServiceSink, output.service_url) if output.service_url else (MilvusSink, output.store_uri)
        sink = ray.remote(num_cpus=0)(sink_class).remote(target, output.collection_name, spec, job.model.name)
        try:
            collection = ray.get(sink.open.remote())
            _check_collection(job, CollectionConfig.model_validate(collection))
        except Exception as error:
            ray.kill(sink)
            raise unwrap(error) or error from None
    ranges = int8_ranges(job_plan)
    compute = job.compute
    dataset = ray.data.from_items([unit.to_dict() for unit in job_plan.todo], override_num_blocks=len(job_plan.todo))
    dataset = dataset.map_batches(
        UnitWorker,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=compute.min_actors, max_size=compute.max_actors),
        num_cpus=compute.num_cpus,
        num_gpus=compute.num_gpus,
        fn_constructor_kwargs={
            "job": job.model_dump(mode="json"), "state_dir": str(state.directory),
            "int8_ranges": ranges, "collection": collection, "sink": sink,
        },
    )
    rows = errors = 0
    collection_count = None
    try:
        for summary in dataset.iter_rows():
            if summary["failure"]:
                raise JobFailedError(str(summary["failure"]))
            rows += int(summary["rows"])
            errors += int(summary["errors"])
    finally:
        if sink is not None:
            collection_count = ray.get(sink.close.remote())
            ray.kill(sink)
    rows_total, errors_total = state.totals()
    outputs = [str(Path(job.output.parquet).resolve())] if job.output.parquet else []
    if job.output.collection is not None:
        outputs.append(f"{job.output.service_url or job.output.store_uri} :: {job.output.collection_name}")
    errors_file = state.merge_errors()
    return JobSummary(
        units=len(job_plan.units), units_run=len(job_plan.todo), rows=rows, errors=errors,
        rows_total=rows_total, errors_total=errors_total, seconds=time.perf_counter() - started,
        outputs=outputs, errors_file=str(errors_file) if errors_file else None, collection_count=collection_count,
    )
