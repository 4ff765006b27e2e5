"""One Ray Train worker's side of training, whatever the objective: the plan the driver worked out,
the state a checkpoint carries, and :class:`Worker`, the base of each objective's worker (the
bi-encoder's in :mod:`~rayprism.trainers.loop`, the cross-encoder's in
:mod:`~rayprism.trainers.cross_encoder`) with the optimizer, schedule, checkpoints and progress lines
they share. Its own module so objectives import it without importing the loop that picks them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayprism.platform.config import TrainConfig

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


@dataclass(frozen=True)
class LoopInputs:
    """What the driver hands every worker: ``train_loop_config[LOOP_INPUTS]`` (Ray Train takes a dict,
    and pickles what it holds, so the records travel as they are)."""

    job: TrainConfig
    plan: RunPlan
    progress: Any
    """The driver's :class:`~rayprism.trainers.progress.ProgressLog` actor, where progress lines go."""
    evaluation: Any
    """An object ref of the evaluation data; None when the run does not evaluate."""


LOOP_INPUTS = "inputs"


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


class Worker:
    """One worker's model, optimizer and step, kept apart from the loop's bookkeeping. An objective's
    subclass loads its model (:meth:`load`), wraps its forward module (:meth:`prepare`), and defines
    :meth:`step` and :meth:`evaluate`; the optimizer, schedule, checkpoints and progress lines are here."""

    def __init__(self, job: TrainConfig, plan: RunPlan, rank: int, size: int, source: str, progress):
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


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
