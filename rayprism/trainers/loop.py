"""What every Ray Train worker runs: ``train_loop_per_worker`` for ``TorchTrainer``.

Each worker loads the model (from the last checkpoint when the run is resumed or a worker was
replaced), wraps it with ``ray.train.torch.prepare_model`` (DDP when there are several workers),
and takes its shard of the pairs from Ray Data. What a step computes is the objective's
:class:`~rayprism.trainers.worker.Worker`: the bi-encoder's (here) embeds the worker's queries, positives and negatives in
length-sorted forward passes and gathers every worker's embeddings for InfoNCE (see
:mod:`rayprism.trainers.losses`); the cross-encoder's scores (query, document) pairs
(:mod:`rayprism.trainers.cross_encoder`). Both step AdamW under a linear warm-up/decay schedule.

Every ``checkpoints.every_steps`` steps, after each evaluation and at the end, rank 0 saves a
checkpoint (the sentence-transformers directory, optimizer and schedule, the step reached) and
every worker calls ``ray.train.report``. Rank 0 sends progress lines (loss, samples/s, ETA) and
evaluation scores to the driver's :class:`~rayprism.trainers.progress.ProgressLog`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rayprism.trainers.worker import (
    LOOP_INPUTS,
    MODEL_DIR,
    OPTIMIZER_FILE,
    STATE_FILE,
    LoopInputs,
    TrainerState,
    Worker,
)


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import torch

    inputs: LoopInputs = config[LOOP_INPUTS]
    job, plan, progress, evaluation = inputs.job, inputs.plan, inputs.progress, inputs.evaluation
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.training.seed + rank)

    worker_class = worker_for(job)
    checkpoint = ray.train.get_checkpoint()
    state = TrainerState()
    optimizer_state = None
    if checkpoint is None:
        worker = worker_class(job, plan, rank, size, plan.model_path, progress)
    else:
        with checkpoint.as_directory() as directory:  # the model is read into memory inside the block
            state = TrainerState.load(Path(directory) / STATE_FILE)
            optimizer_state = torch.load(Path(directory) / OPTIMIZER_FILE, weights_only=False)
            worker = worker_class(job, plan, rank, size, str(Path(directory) / MODEL_DIR), progress)
    state.attempts += 1

    worker.prepare(optimizer_state)
    worker.say(f"worker group of {size} started (attempt {state.attempts}) at step {state.step} of "
               f"{plan.total_steps}" + (f", from {checkpoint.path}" if checkpoint is not None else ""))

    if evaluation is not None and job.evaluation.at_start and state.step == 0 and not state.evaluations:
        worker.evaluate(state, evaluation, epoch=0)
        worker.report(state, with_checkpoint=False)

    shard = ray.train.get_dataset_shard("train")
    started = time.perf_counter()
    window_losses: list[float] = []
    window_started = time.perf_counter()
    last_saved = state.step
    while state.epoch < plan.epochs and state.step < plan.total_steps:
        batches = shard.iter_batches(
            batch_size=plan.per_worker_batch, batch_format="numpy", drop_last=True,
            local_shuffle_buffer_size=plan.per_worker_batch * 8 if state.epoch > 0 else None,
            local_shuffle_seed=job.training.seed + state.epoch if state.epoch > 0 else None,
        )
        for index, batch in enumerate(batches):
            if index >= plan.steps_per_epoch or state.step >= plan.total_steps:
                break
            if index < state.step_in_epoch:
                continue  # done before the run was interrupted
            window_losses.append(worker.step(batch))
            state.step += 1
            state.step_in_epoch = index + 1
            if state.step % job.training.log_every_steps == 0 or state.step == plan.total_steps:
                elapsed = time.perf_counter() - window_started
                worker.log_step(state, window_losses, elapsed)
                state.losses.append([state.step, sum(window_losses) / len(window_losses)])
                window_losses, window_started = [], time.perf_counter()
            if state.step % job.checkpoints.every_steps == 0 and state.step < plan.total_steps:
                state.seconds += time.perf_counter() - started
                started = time.perf_counter()
                worker.report(state, with_checkpoint=True)
                last_saved = state.step
                window_started += time.perf_counter() - started  # samples/s counts training only
        if state.step_in_epoch >= plan.steps_per_epoch or state.step >= plan.total_steps:
            state.epoch += 1
            state.step_in_epoch = 0
            due = evaluation is not None and (state.epoch % job.evaluation.every_epochs == 0
                                              or state.step >= plan.total_steps)
            if due:
                worker.evaluate(state, evaluation, epoch=state.epoch)
            if due or state.epoch >= plan.epochs or state.step >= plan.total_steps:
                state.seconds += time.perf_counter() - started
                started = time.perf_counter()
                worker.report(state, with_checkpoint=True)
                last_saved = state.step
            window_started = time.perf_counter()
        else:
            break  # the shard ran out before the planned steps (it never should: shares are equal)
    if last_saved != state.step or state.step == 0:
        state.seconds += time.perf_counter() - started
        worker.report(state, with_checkpoint=True)


def worker_for(job) -> type[Worker]:
    """The worker class of the job's objective."""
    if job.is_cross_encoder:
        from rayprism.trainers.cross_encoder import CrossEncoderWorker

        return CrossEncoderWorker
    return BiEncoderWorker


class BiEncoderWorker(Worker):
    """``objective: bi_encoder``: InfoNCE over the embeddings of the worker's queries and documents."""

    def load(self, source: str):
        from rayprism.trainers.model import TrainableModel

        job, training = self.job, self.job.training
        self.query_modality = job.data.pairs.query_modality
        return TrainableModel(
            source, device=str(self.device), trust_remote_code=job.model.trust_remote_code,
            max_query_tokens=job.model.max_query_tokens, max_document_tokens=job.model.max_document_tokens,
            forward_batch_size=training.forward_batch_size, gradient_checkpointing=training.gradient_checkpointing,
        )

    def prepare(self, optimizer_state: dict | None) -> None:
        from rayprism.trainers.losses import ContrastiveLoss, views_for
        from rayprism.trainers.model import Embedder

        job = self.job
        self.loss_fn = ContrastiveLoss(
            views_for(job.loss, model_dimensions=self.model.dimensions, model_layers=self.model.layers),
            temperature=job.loss.temperature, symmetric=job.loss.symmetric or self.model.is_image_text,
            gather=job.loss.gather_across_workers,
        )
        self.model.st.train()
        self.prepare_training(Embedder(self.model.st, self.loss_fn.layers), self.model.st, optimizer_state)

    def step(self, batch: dict[str, Any]) -> float:
        import torch

        from rayprism.trainers.losses import ContrastiveBatch

        queries = list(batch["query"])
        documents = list(batch["positive"])
        keys = list(batch["positive_key"])
        k = self.plan.negatives_per_query
        if k:
            for negatives, negative_keys in zip(batch["negatives"], batch["negative_keys"]):
                documents.extend(list(negatives)[:k])
                keys.extend(list(negative_keys)[:k])  # after the positives, query-major: the loss's layout
        groups = [self.model.chunks(queries, "query", self.query_modality), self.model.chunks(documents, "document")]
        with self.autocast():
            query_out, document_out = self.module(groups)
            batches = {
                layer: ContrastiveBatch(query_out[layer], document_out[layer],
                                        torch.tensor(keys, dtype=torch.long, device=query_out[layer].device))
                for layer in query_out
            }
            loss = self.loss_fn(batches)
        return self.apply(loss, backward_scale=self.loss_fn.backward_scale)

    def evaluate(self, state: TrainerState, evaluation, *, epoch: int) -> None:
        """Every worker embeds its share of the evaluation corpus and queries; rank 0 scores."""
        import ray

        from rayprism.trainers.evaluation import evaluate_vectors

        data = ray.get(evaluation) if isinstance(evaluation, ray.ObjectRef) else evaluation
        started = time.perf_counter()
        settings = self.job.evaluation
        corpus = self._encode(data.corpus, "document", "text", settings.max_document_tokens)
        queries = self._encode(data.queries, "query", data.query_modality, None)
        if self.rank == 0:
            self.record_evaluation(state, evaluate_vectors(queries, corpus, data.relevant), epoch=epoch,
                                   started=started)

    def _encode(self, items, role: str, modality: str, max_tokens: int | None):
        return self.shared(items, lambda part: self.model.encode(part, role, modality,
                                                                 max_tokens=max_tokens or self.model.max_tokens))
