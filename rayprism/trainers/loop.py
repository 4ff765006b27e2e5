"""What every Ray Train worker runs: ``train_loop_per_worker`` for ``TorchTrainer``.

Each worker loads the model (from the last checkpoint when the run is resumed or a worker was
replaced), wraps it with ``ray.train.torch.prepare_model`` (DDP when there are several workers),
and takes its shard of the pairs from Ray Data. What a step computes is the objective's
:class:`Worker`: the bi-encoder's embeds the worker's queries, positives and negatives in
length-sorted forward passes and gathers every worker's embeddings for InfoNCE (see
:mod:`rayprism.trainers.losses`); the cross-encoder's scores (query, document) pairs
(:mod:`rayprism.trainers.cross_encoder`). Both step AdamW under a linear warm-up/decay schedule.

Every ``checkpoints.every_steps`` steps, after each evaluation and at the end, rank 0 saves a
checkpoint (the sentence-transformers directory, optimizer and schedule, the step reached) and
every worker calls ``ray.train.report``. Rank 0 sends progress lines (loss, samples/s, ETA) and
evaluation scores to the driver's :class:`~rayprism.trainers.progress.ProgressLog`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_DIR = "model"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass(frozen=True)
class RunPlan:
    """What the driver worked out for the workers."""

    model_path: str
    """The model to start from (a local directory) when there is no checkpoint."""
    pairs: int
    per_worker_batch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    negatives_per_query: int
    base_model: str

    @classmethod
    def make(cls, *, model_path: str, pairs: int, batch_size: int, workers: int, epochs: int,
             max_steps: int | None, negatives_per_query: int, base_model: str) -> RunPlan:
        per_worker = batch_size // workers
        # Ray Data deals each worker an equal share (streaming_split(equal=True)); whole batches only
        steps_per_epoch = (pairs // workers) // per_worker
        total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
        return cls(model_path, pairs, per_worker, steps_per_epoch, epochs, total, negatives_per_query, base_model)


@dataclass
class TrainerState:
    """Saved with every checkpoint: where training stands and what it measured."""

    step: int = 0
    epoch: int = 0
    """Epochs finished."""
    step_in_epoch: int = 0
    evaluations: list[dict] = field(default_factory=list)
    """``{"epoch", "step", "metrics"}``; epoch 0 is the base model."""
    losses: list[list[float]] = field(default_factory=list)
    """(step, mean loss over the last log window)."""
    seconds: float = 0.0
    """Training time over all attempts (steps and evaluations)."""
    attempts: int = 0
    """How many times the worker group started (1 + restarts and resumptions)."""

    @classmethod
    def load(cls, path: Path) -> TrainerState:
        return cls(**json.loads(path.read_text()))


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import torch

    from rayprism.platform.config import TrainConfig

    job = TrainConfig.model_validate(config["job"])
    plan = RunPlan(**config["plan"])
    progress = config.get("progress")
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

    evaluation = config.get("evaluation")
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


class Worker:
    """One worker's model, optimizer and step, kept apart from the loop's bookkeeping. An objective's
    subclass loads its model (:meth:`load`), wraps its forward module (:meth:`prepare`), and defines
    :meth:`step` and :meth:`evaluate`; the optimizer, schedule, checkpoints and progress lines are here."""

    def __init__(self, job, plan: RunPlan, rank: int, size: int, source: str, progress):
        import ray.train.torch

        self.job, self.plan, self.rank, self.size, self.progress = job, plan, rank, size, progress
        self.device = ray.train.torch.get_device()
        self.model = self.load(source)

    def load(self, source: str):
        """The trainable model (it has ``save(directory)``)."""
        raise NotImplementedError

    def prepare(self, optimizer_state: dict | None) -> None:
        raise NotImplementedError

    def step(self, batch: dict[str, Any]) -> float:
        raise NotImplementedError

    def evaluate(self, state: TrainerState, evaluation, *, epoch: int) -> None:
        raise NotImplementedError

    def prepare_training(self, module, parameters, optimizer_state: dict | None) -> None:
        """``module`` (what a step calls) wrapped for Ray Train (DDP with several workers); AdamW over
        ``parameters``' parameters (no decay for biases and norms), the schedule and the loss scaler,
        restored from ``optimizer_state`` on a resumed run."""
        import ray.train.torch
        import torch

        training = self.job.training
        # find_unused_parameters: BERT's pooler (and a CLIP's logit scale) get no gradient from pooled embeddings
        self.module = ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"find_unused_parameters": True} if self.size > 1 else None)
        self._parameters = parameters
        decay, no_decay = [], []
        for name, parameter in parameters.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(
                    parameter)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=training.learning_rate,
        )
        warmup = max(1, int(self.plan.total_steps * training.warmup_ratio))
        total = max(1, self.plan.total_steps)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        device_type = self.device.type
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(training.precision)
        self.device_type = device_type
        self.scaler = torch.amp.GradScaler(device_type, enabled=training.precision == "fp16")
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state["optimizer"])
            self.scheduler.load_state_dict(optimizer_state["scheduler"])
            if optimizer_state.get("scaler"):
                self.scaler.load_state_dict(optimizer_state["scaler"])
            torch.set_rng_state(optimizer_state["rng"][self.rank % len(optimizer_state["rng"])])

    def autocast(self):
        """Mixed precision as ``training.precision`` asks (a no-op for fp32)."""
        import torch

        return torch.autocast(self.device_type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def apply(self, loss, *, backward_scale: float = 1.0) -> float:
        """Backward, clip, one optimizer and schedule step; the loss as a float."""
        import torch

        self.scaler.scale(loss * backward_scale).backward()
        if self.job.training.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._parameters.parameters(), self.job.training.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def shared(self, items, compute):
        """This worker computes ``compute(items[rank::size])`` (an array, a row per item); every worker
        gets all the rows, in the order of ``items``."""
        import numpy as np

        share = items[self.rank::self.size]
        mine = compute(share) if len(share) else None
        if self.size == 1:
            return mine
        import torch.distributed as dist

        parts: list = [None] * self.size
        dist.all_gather_object(parts, mine)
        first = next(part for part in parts if part is not None)
        rows = np.empty((len(items), *first.shape[1:]), dtype=first.dtype)
        for rank, part in enumerate(parts):
            if part is not None:
                rows[rank::self.size] = part
        return rows

    def record_evaluation(self, state: TrainerState, scores, *, epoch: int, started: float) -> None:
        """Rank 0 keeps the scores in the state and sends the line to the driver."""
        from rayprism.trainers.evaluation import evaluation_label

        record = {"epoch": epoch, "step": state.step, "metrics": scores.as_dict(),
                  "seconds": round(time.perf_counter() - started, 1)}
        state.evaluations.append(record)
        self.say(f"evaluation ({evaluation_label(record)}, step {state.step}): {scores.line()} "
                 f"in {time.perf_counter() - started:.0f} s", kind="eval", metrics=scores.as_dict(), epoch=epoch)

    def report(self, state: TrainerState, *, with_checkpoint: bool) -> None:
        """Every worker reports (a barrier); rank 0 attaches the checkpoint."""
        import ray.train
        import torch

        metrics = {"step": state.step, "epoch": state.epoch}
        if state.evaluations:
            metrics.update(state.evaluations[-1]["metrics"])
        if not with_checkpoint or self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="rayprism-checkpoint-") as directory:
            self.model.save(os.path.join(directory, MODEL_DIR))
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "scaler": self.scaler.state_dict(), "rng": [torch.get_rng_state()]},
                       os.path.join(directory, OPTIMIZER_FILE))
            Path(directory, STATE_FILE).write_text(json.dumps(asdict(state)))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=f"checkpoint-step-{state.step:07d}-e{state.epoch}")

    def log_step(self, state: TrainerState, losses: list[float], elapsed: float) -> None:
        if self.rank != 0:
            return
        samples_per_s = len(losses) * self.plan.per_worker_batch * self.size / max(elapsed, 1e-9)
        per_step = elapsed / max(1, len(losses))
        eta = (self.plan.total_steps - state.step) * per_step
        loss = sum(losses) / len(losses)
        self.say(f"step {state.step}/{self.plan.total_steps}  epoch {state.epoch + 1}/{self.plan.epochs}  "
                 f"loss {loss:.4f}  {samples_per_s:.1f} samples/s  ETA {_duration(eta)}", kind="step",
                 step=state.step, total=self.plan.total_steps, loss=loss, samples_per_s=samples_per_s, eta_s=eta)

    def say(self, message: str, *, kind: str = "info", **values) -> None:
        if self.rank != 0:
            return
        if self.progress is not None:
            self.progress.post.remote({"kind": kind, "message": message, **values})
        else:
            print(message, flush=True)


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


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
