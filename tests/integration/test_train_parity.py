"""In-batch negatives gathered across workers: 2 workers × B queries train exactly as 1 worker × 2B.

Two Ray Train workers (DDP over gloo) each take half of one fixed batch through a small linear
encoder, compute the trainer's loss and step SGD; the same batch whole, in this process with no
distribution, gives the reference loss and weights.
"""

import numpy as np
import pytest
import torch

from rayprism.trainers.losses import ContrastiveBatch, ContrastiveLoss, View

BATCH, NEGATIVES, WIDTH, DIMENSIONS = 8, 1, 12, 6


def fixed_batch():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(BATCH, WIDTH, generator=generator)
    documents = torch.randn(BATCH * (1 + NEGATIVES), WIDTH, generator=generator)
    keys = torch.arange(BATCH * (1 + NEGATIVES))
    keys[3] = keys[1]  # a duplicate document across the two halves: masked in both
    return queries, documents, keys


def encoder():
    torch.manual_seed(1)
    return torch.nn.Linear(WIDTH, DIMENSIONS)


def loss_for(views, gather):
    return ContrastiveLoss(views, temperature=0.1, symmetric=True, gather=gather)


def half(queries, documents, keys, rank, size):
    """Worker ``rank``'s share in the trainer's layout: its queries, their positives, their negatives."""
    rows = slice(rank * BATCH // size, (rank + 1) * BATCH // size)
    negatives = documents[BATCH:].reshape(BATCH, NEGATIVES, WIDTH)[rows].reshape(-1, WIDTH)
    negative_keys = keys[BATCH:].reshape(BATCH, NEGATIVES)[rows].reshape(-1)
    return queries[rows], torch.cat([documents[:BATCH][rows], negatives]), torch.cat([keys[:BATCH][rows],
                                                                                      negative_keys])


def one_step(model, views, gather, rank=0, size=1, scale=None):
    queries, documents, keys = half(*fixed_batch(), rank, size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = loss_for(views, gather)
    loss = loss_fn({None: ContrastiveBatch(model(queries), model(documents), keys)})
    (loss * (scale if scale is not None else loss_fn.backward_scale)).backward()
    optimizer.step()
    return float(loss), model


PLAIN, MATRYOSHKA = [View(None, None)], [View(None, None), View(None, 3, 0.5)]
# name: (views, gather across workers, loss scale before backward: None is the trainer's own)
VARIANTS = {
    "plain": (PLAIN, True, None),
    "matryoshka": (MATRYOSHKA, True, None),
    "local": (PLAIN, False, None),  # without gathering
    "averaged": (PLAIN, True, 1.0),  # without undoing DDP's gradient averaging
}


@pytest.fixture(scope="module")
def two_worker_steps(ray_session, tmp_path_factory) -> dict[str, tuple[float, np.ndarray]]:
    """Every variant's loss and stepped weights on rank 0 of one 2-worker run (one worker group for all:
    starting one costs more than the steps)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def train_fn(config):
        import tempfile

        import ray.train.torch

        context = ray.train.get_context()
        metrics = {}
        for name, (views, gather, scale) in config["variants"].items():
            model = ray.train.torch.prepare_model(encoder())
            loss, model = one_step(model, views, gather, context.get_world_rank(), context.get_world_size(), scale)
            weights = model.module.weight if hasattr(model, "module") else model.weight
            metrics[name] = {"loss": loss, "weight": weights.detach().numpy().tolist()}
        # Result.metrics are those reported with the latest checkpoint (Ray Train v2).
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = ray.train.Checkpoint.from_directory(directory) if context.get_world_rank() == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)

    trainer = TorchTrainer(
        train_fn, train_loop_config={"variants": VARIANTS},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path_factory.mktemp("parity"))),
    )
    metrics = trainer.fit().metrics
    return {name: (metrics[name]["loss"], np.array(metrics[name]["weight"])) for name in VARIANTS}


@pytest.mark.parametrize("variant", ["plain", "matryoshka"])
def test_two_workers_of_b_equal_one_worker_of_2b(two_worker_steps, variant):
    views = VARIANTS[variant][0]
    single_loss, single_model = one_step(encoder(), views, gather=True)
    loss, weight = two_worker_steps[variant]
    assert loss == pytest.approx(single_loss, rel=1e-5)
    assert np.allclose(weight, single_model.weight.detach().numpy(), atol=1e-6)


def test_the_comparison_can_fail(two_worker_steps):
    """Without gathering, or without undoing DDP's averaging, 2 × B is not 1 × 2B."""
    single_loss, single_model = one_step(encoder(), PLAIN, gather=True)
    local_loss, _ = two_worker_steps["local"]
    assert local_loss != pytest.approx(single_loss, rel=1e-3)
    _, averaged = two_worker_steps["averaged"]
    assert not np.allclose(averaged, single_model.weight.detach().numpy(), atol=1e-4)
