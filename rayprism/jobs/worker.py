"""One unit of a batch job, start to finish: read, check, cut (for a chunked collection), embed, encode, write,
record.

Runs inside a Ray Data actor that holds the same Encoder class the service
loads. A unit is either finished completely (parquet part renamed into place,
rows upserted, progress recorded, in that order) or redone on the next run;
upserts by id make redoing it harmless, whichever process writes the rows
(the job's sink actor, or this actor itself into a Milvus server).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayprism.jobs.readers import Unit, read_unit
from rayprism.jobs.records import UnitReport, WorkerSetup, service_embeds
from rayprism.jobs.state import JobState
from rayprism.platform.codecs import build_codecs
from rayprism.platform.config import DENSE_FIELD, PIECE_FIELDS, CollectionConfig, JobConfig, JobModelConfig
from rayprism.platform.errors import InvalidInputError, RayprismError
from rayprism.platform.files import write_atomically
from rayprism.platform.models.base import Encoder, Modality, Prepared
from rayprism.platform.models.registry import load_encoder
from rayprism.platform.store.documents import InvalidDocumentsError, validate_documents
from rayprism.platform.store.pieces import document_digest, document_pieces
from rayprism.platform.text.chunking import Chunker, load_chunker


class RowError(RayprismError):
    """A bad input row with ``on_error: fail``."""

    http_status = 400


@dataclass
class UnitRows:
    ids: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    """What is embedded: the texts, or the image/audio items (bytes or ``data:`` URIs)."""
    texts: list[str] = field(default_factory=list)
    """The text kept with each row: the embedded text, or a media item's caption."""
    others: list[dict] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    """Each good row's row number in its file, to report it if embedding refuses it."""
    collection_rows: list[dict] = field(default_factory=list)
    """Rows shaped and checked for the Milvus collection (vectors added later), when there is one."""
    errors: list[dict] = field(default_factory=list)

    def drop(self, positions: set[int]) -> None:
        for name in ("ids", "inputs", "texts", "others", "rows", "collection_rows"):
            values = getattr(self, name)
            if values:
                setattr(self, name, [value for position, value in enumerate(values) if position not in positions])


def encoder_config(job: JobConfig) -> JobModelConfig:
    """The serving model spec with the job's forward batch size and thread count."""
    compute = job.compute
    batching = job.model.batching.model_copy(update={"forward_batch_size": compute.batch_size})
    return job.model.model_copy(update={"batching": batching, "torch_threads": compute.threads()})


def derived_id(unit: Unit, row: int) -> str:
    return f"{Path(unit.path).name}:{row}"


def collect_rows(job: JobConfig, unit: Unit, collection: CollectionConfig | None) -> UnitRows:
    """The unit's good rows, and one error record per bad row (never dropped silently)."""
    rows = UnitRows()
    id_field, text_field, item_field = job.input.id_field, job.input.text_field, job.input.item_field()
    for raw in read_unit(unit, job.input.resolved_format()):
        record = raw.record or {}
        row_id = record.get(id_field) if id_field else derived_id(unit, raw.row)
        reason = raw.error
        if reason is None and (row_id is None or row_id == ""):
            reason = f"missing id field {id_field!r}"
        text = record.get(text_field)
        if item_field is None:
            embedded = text
            if reason is None and (not isinstance(text, str) or not text.strip()):
                reason = f"field {text_field!r} must be a non-empty string"
        else:
            embedded, text = record.get(item_field), "" if text is None else text
            if reason is None and (not isinstance(embedded, (bytes, str)) or not embedded):
                reason = f"field {item_field!r} must hold the {job.input.resolved_modality()} (bytes or a data: URI)"
            elif reason is None and not isinstance(text, str):
                reason = f"field {text_field!r} (the caption) must be a string"
        others = {key: value for key, value in record.items() if key not in (id_field, text_field, item_field)}
        collection_row = None
        if reason is None and collection is not None:
            collection_row, reason = _collection_row(collection, row_id, text, others)
        if reason is not None:
            rows.errors.append(_error(job, unit, raw.row, row_id, reason))
            continue
        rows.ids.append(row_id)
        rows.inputs.append(embedded)
        rows.texts.append(text)
        rows.others.append(others)
        rows.rows.append(raw.row)
        if collection_row is not None:
            rows.collection_rows.append(collection_row)
    return rows


def pieces_of(rows: UnitRows, collection: CollectionConfig, chunker: Chunker) -> UnitRows:
    """A chunked collection's unit: each document's pieces in its place, cut as the service cuts them
    (:func:`~rayprism.platform.store.pieces.document_pieces`). A piece is embedded from its context and text,
    and written as the collection's piece row; a parquet part holds one row per piece too (its key as ``id``,
    its text, its document's fields and place)."""
    pieces = UnitRows(errors=rows.errors)
    for row_number, others, document in zip(rows.rows, rows.others, rows.collection_rows):
        for piece_row, embed_text in document_pieces(collection, chunker, document, document_digest(collection, document)):
            pieces.ids.append(piece_row["id"])
            pieces.inputs.append(embed_text)
            pieces.texts.append(piece_row[collection.text_field])
            pieces.others.append({**others, **{name: piece_row[name] for name in PIECE_FIELDS}})
            pieces.rows.append(row_number)
            pieces.collection_rows.append(piece_row)
    return pieces


def _chunker(job: JobConfig, encoder: Encoder, collection: CollectionConfig | None) -> Chunker | None:
    """The chunker of a chunked collection, by the job model's tokenizer, leaving room for the prompt the job
    names (a model's default prompt is not known here: name it in ``model.prompt_name``)."""
    if collection is None or collection.chunking is None:
        return None
    prompt = encoder.prompts.get(job.model.prompt_name) if job.model.prompt_name else None
    return load_chunker(job.model.source, collection.chunking, model_max_tokens=encoder.max_input_tokens, prompt=prompt)


def _error(job: JobConfig, unit: Unit, row: int, row_id: Any, reason: str) -> dict:
    """A bad row's record for the errors file, or the job's end with ``on_error: fail``."""
    if job.on_error == "fail":
        raise RowError(f"{unit.path} row {row} (id {row_id!r}): {reason}")
    return {"file": unit.path, "row": row, "id": row_id, "reason": reason}


def prepare_inputs(encoder: Encoder, inputs: list, modality: Modality, prompt_name: str | None
                   ) -> tuple[list[Prepared], dict[int, str]]:
    """Prepared inputs and, by position, why the ones left out were refused. Texts are checked when
    read; image and audio items are decoded here, one at a time, so one bad file costs only itself."""
    if modality == "text":
        return encoder.prepare(inputs, modality, prompt_name), {}
    prepared, refused = [], {}
    for position, item in enumerate(inputs):
        try:
            prepared.extend(encoder.prepare([item], modality))
        except InvalidInputError as error:
            refused[position] = error.message.removeprefix("input[0] ")
    return prepared, refused


def _collection_row(collection: CollectionConfig, row_id: Any, text: str, others: dict) -> tuple[dict | None, str | None]:
    """The row as the collection stores it (input fields it lacks are left out), or why it cannot be."""
    document = {"id": row_id, collection.text_field: text, **{k: others.get(k) for k in collection.fields}}
    try:
        return validate_documents(collection, [document])[0], None
    except InvalidDocumentsError as error:
        return None, "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in error.problems)


def _column(values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep every value, as JSON text
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values])


def _vector_column(matrix: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def parquet_bytes(job: JobConfig, rows: UnitRows, codec_columns: dict[str, np.ndarray]) -> bytes:
    columns: dict[str, pa.Array] = {"id": _column(rows.ids), job.input.text_field: pa.array(rows.texts, pa.string())}
    for name in dict.fromkeys(key for other in rows.others for key in other):
        if name not in columns:
            columns[name] = _column([other.get(name) for other in rows.others])
    for name, matrix in codec_columns.items():
        columns[name] = _vector_column(matrix)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


class UnitWorker:
    """Ray Data actor: called with a batch of unit descriptions, returns one report row per unit."""

    def __init__(self, setup: WorkerSetup):
        self.job = setup.job
        self.state = JobState(setup.state_dir)
        self.collection = setup.collection
        self.writer = setup.writer
        self.encoder = load_encoder(encoder_config(self.job))
        self.embeds = not service_embeds(self.job, self.collection)
        self.chunker = _chunker(self.job, self.encoder, self.collection) if self.embeds else None
        self.codecs = build_codecs(self.job.codecs, dimensions=self.encoder.dimensions, int8_ranges=setup.int8_ranges)
        self.parquet_dir = Path(self.job.output.parquet) if self.job.output.parquet else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return UnitReport.columns([self.process(unit) for unit in Unit.from_batch(batch)])

    def process(self, unit: Unit) -> UnitReport:
        """Finish the unit; a failure the job should stop on is returned, not raised (Ray's
        wrappers would bury it), and the unit stays unfinished."""
        import ray

        started = time.perf_counter()
        try:
            rows = collect_rows(self.job, unit, self.collection)
            documents = len(rows.ids)
            if self.chunker is not None:  # each document's pieces take its place: embedded and written
                rows = pieces_of(rows, self.collection, self.chunker)
            prepared, refused = prepare_inputs(self.encoder, rows.inputs, self.job.input.resolved_modality(),
                                               self.job.model.prompt_name) if self.embeds and rows.inputs else ([], {})
            rows.errors.extend(_error(self.job, unit, rows.rows[position], rows.ids[position], reason)
                               for position, reason in refused.items())
        except RowError as error:
            return UnitReport(unit.id, failure=error.message)
        rows.drop(set(refused))
        documents -= len(refused)  # media items: never cut into pieces
        vectors = np.zeros((0, self.encoder.dimensions), dtype=np.float32)
        if prepared:
            vectors = self.encoder.encode(prepared)
        if self.parquet_dir is not None:
            codec_columns = {codec.column: codec.encode(vectors) for codec in self.codecs}
            write_atomically(self.parquet_dir / f"part-{unit.id}.parquet", parquet_bytes(self.job, rows, codec_columns))
        written_by = None
        if self.writer is not None and rows.ids:
            for row, vector in zip(rows.collection_rows, vectors):  # none when the service embeds
                row[DENSE_FIELD] = vector
            written_by = self.writer.upsert(rows.collection_rows)  # before the unit is done: a redo overwrites
        self.state.mark_done(unit.id, documents, rows.errors, node=ray.get_runtime_context().get_node_id(),
                             writer=written_by)
        return UnitReport(unit.id, documents, len(rows.errors), time.perf_counter() - started)
