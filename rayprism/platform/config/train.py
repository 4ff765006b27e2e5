"""``rayprism train`` configuration: a training job file (see configs/train-debian.yaml).

One file says which model to start from, which pairs to learn from, how to score the model on
held-out queries, the loss, how hard negatives are mined, and how many Ray Train workers run it.
Relative paths are relative to the file's own directory, as in a batch job file.

``objective`` picks what is trained: a bi-encoder (embedding model, the default) with InfoNCE, or a
cross-encoder (reranker) with binary cross-entropy on (query, positive) and (query, hard negative)
pairs (configs/train-reranker-debian.yaml).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from rayprism.platform.config.base import PositiveInt, StrictModel, load_config, valid_name
from rayprism.platform.config.models import DEFAULT_MODEL_SOURCE

TrainFormat = Literal["jsonl", "parquet"]
InputModality = Literal["text", "image"]
_FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _resolved_format(path: str, declared: TrainFormat | None, key: str) -> TrainFormat:
    if declared is not None:
        return declared
    suffix = Path(path.rstrip("*")).suffix.lower()
    if suffix not in _FORMAT_BY_SUFFIX:
        raise ValueError(f"cannot tell the format of {path!r}; set {key}.format to jsonl or parquet")
    return _FORMAT_BY_SUFFIX[suffix]


class NewImageTextModel(StrictModel):
    """A CLIP-style model built from scratch (random weights): both towers small, its byte-level BPE
    tokenizer trained on the training captions. For data with no pretrained model that fits it."""

    image_size: PositiveInt = 32
    """Images are resized to this many pixels square."""
    patch_size: PositiveInt = 4
    channels: Literal[1, 3] = 3
    hidden_size: PositiveInt = 64
    layers: PositiveInt = 2
    heads: PositiveInt = 2
    projection_dim: PositiveInt = 32
    max_text_tokens: PositiveInt = 16
    vocab_size: PositiveInt = 400

    @model_validator(mode="after")
    def _check_shapes(self) -> NewImageTextModel:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads})")
        return self


class TrainModelConfig(StrictModel):
    source: str = DEFAULT_MODEL_SOURCE
    """The model to fine-tune: a sentence-transformers or transformers text model, or a CLIP/SigLIP
    directory (an image–text model), named as in serve.yaml (a directory, ``package:``, a hub id)."""
    new_image_text: NewImageTextModel | None = None
    """Instead of ``source``: build a small CLIP-style model from scratch."""
    max_query_tokens: PositiveInt = 64
    """Queries are cut to this many tokens in training."""
    max_document_tokens: PositiveInt | None = 128
    """Documents are cut to this many tokens in training and mining (long documents dominate the cost
    of a step); null: the model's own limit. Evaluation and the exported model keep the model's limit."""
    trust_remote_code: bool = False


class PairsConfig(StrictModel):
    """Training pairs: rows ``{query, positive, [negatives]}`` or ``{query, doc_id}`` joined with ``corpus``."""

    path: str
    format: TrainFormat | None = None
    """Default: from the file suffix."""
    query_field: str = "query"
    query_modality: InputModality = "text"
    """``image``: the query field holds image bytes or an image file path (relative to the data file)."""
    positive_field: str = "positive"
    negatives_field: str = "negatives"
    """Optional column: a list of texts (or of corpus ids with ``corpus``) that are not answers."""
    negatives_per_query: Annotated[int, Field(ge=0)] = 1
    """Given negatives used per pair (when the file has them and no mining is configured)."""
    doc_id_field: str = "doc_id"
    """With ``corpus``: the column naming each query's document."""
    max_pairs: PositiveInt | None = None
    """Train on this many pairs, drawn at random (by ``training.seed``) from the file."""

    def resolved_format(self) -> TrainFormat:
        return _resolved_format(self.path, self.format, "data.pairs")


class CorpusConfig(StrictModel):
    path: str
    format: TrainFormat | None = None
    id_field: str = "id"
    text_field: str = "text"

    def resolved_format(self) -> TrainFormat:
        return _resolved_format(self.path, self.format, "corpus")


class TrainDataConfig(StrictModel):
    pairs: PairsConfig
    corpus: CorpusConfig | None = None
    """Documents by id, for pairs that name their document (``doc_id``) instead of holding its text."""


class EvaluationConfig(StrictModel):
    """Held-out queries searched against a corpus with exact dense search (as the service searches):
    MRR@10, Recall@1/10 and nDCG@10, before training (optional) and after each epoch."""

    queries: str
    """Rows ``{query, doc_id}``: each query's one relevant document."""
    corpus: CorpusConfig
    query_field: str = "query"
    query_modality: InputModality = "text"
    doc_id_field: str = "doc_id"
    max_queries: PositiveInt | None = None
    every_epochs: PositiveInt = 1
    at_start: bool = False
    """Also score the base model before training (costs one more pass over the corpus)."""
    max_document_tokens: PositiveInt | None = None
    """Default: the model's own limit, what ``serve`` and ``embed`` use."""
    batch_size: PositiveInt = 64


class LossConfig(StrictModel):
    """InfoNCE: each query against its positive, every other document in the (global) batch and its
    hard negatives; optionally Matryoshka or Starbucks-style 2D Matryoshka views, losses summed."""

    temperature: PositiveFloat = 0.05
    """Logits are cosine similarities divided by this (scale = 1 / temperature)."""
    symmetric: bool = False
    """Add the document→query direction (CLIP's loss); default for image–text models."""
    gather_across_workers: bool = True
    """In-batch negatives from every worker's batch (all_gather), not only the worker's own."""
    matryoshka_dimensions: list[PositiveInt] | None = None
    """Also train truncated embeddings: one loss per leading-dimensions prefix, e.g. [384, 256, 128, 64]."""
    matryoshka_weights: list[PositiveFloat] | None = None
    """One weight per Matryoshka dimension; default 1 each."""
    starbucks: list[tuple[PositiveInt, PositiveInt]] | None = None
    """Starbucks 2D Matryoshka: (layers, dimensions) pairs, small to large, e.g. [[2, 32], [4, 128], [6, 384]];
    the model's first ``layers`` layers pooled and cut to ``dimensions``; losses summed."""

    @model_validator(mode="after")
    def _check_views(self) -> LossConfig:
        if self.matryoshka_dimensions is not None and self.starbucks is not None:
            raise ValueError("set loss.matryoshka_dimensions or loss.starbucks, not both")
        if self.matryoshka_weights is not None:
            if self.matryoshka_dimensions is None:
                raise ValueError("matryoshka_weights needs matryoshka_dimensions")
            if len(self.matryoshka_weights) != len(self.matryoshka_dimensions):
                raise ValueError(f"matryoshka_weights ({len(self.matryoshka_weights)}) needs one weight per "
                                 f"dimension ({len(self.matryoshka_dimensions)})")
        if self.matryoshka_dimensions is not None and len(set(self.matryoshka_dimensions)) != len(
                self.matryoshka_dimensions):
            raise ValueError(f"matryoshka_dimensions must be distinct, got {self.matryoshka_dimensions}")
        if self.starbucks is not None:
            if not self.starbucks:
                raise ValueError("starbucks needs at least one (layers, dimensions) pair")
            for smaller, larger in zip(self.starbucks, self.starbucks[1:]):
                if not (smaller[0] <= larger[0] and smaller[1] <= larger[1]) or smaller == larger:
                    raise ValueError(f"starbucks pairs must grow from small to large, got {list(smaller)} "
                                     f"before {list(larger)}")
        return self


class HardNegativesConfig(StrictModel):
    """Negatives mined once, before training, with the base model: for each query, documents the base
    model ranks within ``[rank_from, rank_to]`` (1-based), skipping the positive and near-duplicates of
    it. Documents embedded for mining are cached in the run's directory."""

    per_query: PositiveInt = 1
    rank_from: PositiveInt = 30
    rank_to: PositiveInt = 100
    max_similarity_to_positive: Annotated[float, Field(gt=-1, le=1)] = 0.95
    """Candidates at least this similar (cosine, base model) to the positive count as duplicates of it."""
    corpus: Literal["pairs", "all"] = "pairs"
    """Mine among the documents of the training pairs, or among the whole corpus."""
    batch_size: PositiveInt = 64

    @model_validator(mode="after")
    def _check_window(self) -> HardNegativesConfig:
        if self.rank_to < self.rank_from:
            raise ValueError(f"rank_to ({self.rank_to}) must be ≥ rank_from ({self.rank_from})")
        if self.rank_to - self.rank_from + 1 < self.per_query:
            raise ValueError(f"the rank window [{self.rank_from}, {self.rank_to}] holds fewer than per_query "
                             f"({self.per_query}) documents")
        return self


class CrossEncoderObjectiveConfig(StrictModel):
    """``objective: cross_encoder``: a reranker scoring a (query, document) pair with one logit, trained
    with binary cross-entropy: each query's positive labelled 1, its negatives (``hard_negatives``, mined
    with the retriever) labelled 0. Evaluated by reranking each held-out query's top ``candidates``."""

    retriever: str | None = None
    """The bi-encoder that mines the hard negatives and retrieves the evaluation candidates (exact dense
    search), named as ``model.source`` is. Default: ``model.source`` itself when that is a bi-encoder
    (its encoder also starts the reranker, under a fresh one-logit head); a CrossEncoder ``model.source``
    needs one."""
    max_tokens: PositiveInt | None = None
    """A (query, document) pair is cut to this many tokens, longer side first, in training and evaluation;
    the exported reranker keeps it as its ``max_seq_length``, so it serves as it was scored. Default: the
    base model's limit."""
    positive_weight: PositiveFloat | None = None
    """``pos_weight`` of the loss: a positive counts this many negatives (e.g. ``hard_negatives.per_query``
    to balance the classes); default 1."""
    candidates: Annotated[int, Field(ge=10)] = 20
    """Evaluation: the retriever's best ``candidates`` documents per held-out query are reranked, and
    MRR@10, Recall@1/10 and nDCG@10 scored on the new order."""
    candidates_field: str | None = None
    """Evaluation: a column of ``evaluation.queries`` listing each query's candidate document ids (best
    first), reranked instead of the retriever's (cut to ``candidates``)."""


class TrainingConfig(StrictModel):
    epochs: PositiveInt = 1
    max_steps: PositiveInt | None = None
    """Stop after this many steps (over all epochs) even if the epochs are not done."""
    batch_size: PositiveInt = 64
    """Queries per step over all workers (each worker takes batch_size / num_workers)."""
    learning_rate: PositiveFloat = 5e-5
    warmup_ratio: Fraction = 0.1
    """Linear warm-up over this share of the steps, then linear decay to zero."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    max_grad_norm: PositiveFloat | None = 1.0
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision (autocast) for GPUs; CPUs without AMX run bf16 slower than fp32."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory for bigger batches, about a third more compute."""
    forward_batch_size: PositiveInt = 32
    """Inputs per forward pass: a worker's batch is length-sorted and cut into these, so short texts are
    not padded to the longest of the batch."""
    log_every_steps: PositiveInt = 10


class TrainComputeConfig(StrictModel):
    num_workers: PositiveInt = 1
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat = 1
    torch_threads: PositiveInt | None = None
    """Intra-op threads per worker; default ``cpus_per_worker`` (at least 1)."""


class CheckpointsConfig(StrictModel):
    every_steps: PositiveInt = 200
    keep: PositiveInt = 2
    storage_path: str = "../data/train"
    """Ray Train's storage: the run's checkpoints and mining cache go to ``<storage_path>/<name>``."""
    max_failures: Annotated[int, Field(ge=-1)] = 3
    """Restarts from the last checkpoint after a worker dies (-1: no limit)."""


Objective = Literal["bi_encoder", "cross_encoder"]


class TrainConfig(StrictModel):
    name: str
    """The run: rerunning a file with the same name resumes from its last checkpoint."""
    objective: Objective = "bi_encoder"
    """``bi_encoder``: an embedding model (InfoNCE, ``loss``); ``cross_encoder``: a reranker (binary
    cross-entropy, ``cross_encoder``)."""
    cross_encoder: CrossEncoderObjectiveConfig | None = None
    """Settings of ``objective: cross_encoder`` (all optional)."""
    model: TrainModelConfig = TrainModelConfig()
    data: TrainDataConfig
    evaluation: EvaluationConfig | None = None
    loss: LossConfig = LossConfig()
    hard_negatives: HardNegativesConfig | None = None
    training: TrainingConfig = TrainingConfig()
    compute: TrainComputeConfig = TrainComputeConfig()
    checkpoints: CheckpointsConfig = CheckpointsConfig()
    output: str | None = None
    """The model directory written at the end (``--output`` overrides)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return valid_name(name)

    @model_validator(mode="after")
    def _check_together(self) -> TrainConfig:
        pairs = self.data.pairs
        pairs.resolved_format()
        if self.data.corpus is not None:
            self.data.corpus.resolved_format()
        if self.evaluation is not None:
            self.evaluation.corpus.resolved_format()
        workers, batch = self.compute.num_workers, self.training.batch_size
        if batch % workers:
            raise ValueError(f"training.batch_size ({batch}) must be a multiple of compute.num_workers ({workers})")
        if self.hard_negatives is not None and self.hard_negatives.corpus == "all" and self.data.corpus is None:
            raise ValueError("hard_negatives.corpus 'all' needs data.corpus")
        if pairs.query_modality == "image" and self.hard_negatives is not None:
            raise ValueError("hard_negatives are mined for text queries; remove hard_negatives for image queries")
        if self.loss.starbucks is not None and self.is_image_text:
            raise ValueError("loss.starbucks applies to text models")
        if self.objective == "cross_encoder":
            self._check_cross_encoder()
        elif self.cross_encoder is not None:
            raise ValueError(f"cross_encoder settings apply to objective: cross_encoder (got objective "
                             f"{self.objective!r}); set objective: cross_encoder or remove cross_encoder")
        return self

    def _check_cross_encoder(self) -> None:
        if self.is_image_text:
            raise ValueError("objective cross_encoder trains a text reranker: remove model.new_image_text and "
                             "use text queries")
        if self.loss != LossConfig():
            raise ValueError("loss configures the bi-encoder's InfoNCE; objective cross_encoder trains with binary "
                             "cross-entropy: remove loss (cross_encoder.positive_weight weighs the positives)")
        if self.hard_negatives is None and self.data.pairs.negatives_per_query == 0:
            raise ValueError("objective cross_encoder needs negatives: add hard_negatives (mined with the "
                             "retriever) or set data.pairs.negatives_per_query ≥ 1")
        if self.reranking.candidates_field is not None and self.evaluation is None:
            raise ValueError("cross_encoder.candidates_field names a column of evaluation.queries: add evaluation")

    @property
    def reranking(self) -> CrossEncoderObjectiveConfig:
        """The cross-encoder settings (their defaults when the file has none)."""
        return self.cross_encoder or CrossEncoderObjectiveConfig()

    @property
    def is_cross_encoder(self) -> bool:
        return self.objective == "cross_encoder"

    @property
    def is_image_text(self) -> bool:
        return self.model.new_image_text is not None or self.data.pairs.query_modality == "image"

    @property
    def threads(self) -> int:
        return self.compute.torch_threads or max(1, int(self.compute.cpus_per_worker))


def load_train_config(path: str | Path, *, output: str | None = None) -> TrainConfig:
    """A training file, its relative paths made absolute against the file's own directory;
    ``output`` (from ``--output``) replaces the file's ``output``."""
    config = load_config(TrainConfig, path)
    base = Path(path).resolve().parent

    def absolute(value: str | None) -> str | None:
        return value if value is None or Path(value).expanduser().is_absolute() else os.path.normpath(base / value)

    def corpus(value: CorpusConfig | None) -> CorpusConfig | None:
        return None if value is None else value.model_copy(update={"path": absolute(value.path)})

    def model_source(value: str | None) -> str | None:
        return os.path.normpath(base / value) if value is not None and value.startswith(("./", "../")) else value

    data = config.data
    evaluation = config.evaluation
    update = {
        "model": config.model.model_copy(update={"source": model_source(config.model.source)}),
        "cross_encoder": None if config.cross_encoder is None else config.cross_encoder.model_copy(update={
            "retriever": model_source(config.cross_encoder.retriever)}),
        "data": data.model_copy(update={"pairs": data.pairs.model_copy(update={"path": absolute(data.pairs.path)}),
                                        "corpus": corpus(data.corpus)}),
        "evaluation": None if evaluation is None else evaluation.model_copy(update={
            "queries": absolute(evaluation.queries), "corpus": corpus(evaluation.corpus)}),
        "checkpoints": config.checkpoints.model_copy(update={
            "storage_path": absolute(config.checkpoints.storage_path)}),
        "output": os.path.abspath(output) if output is not None else absolute(config.output),
    }
    return config.model_copy(update=update)
