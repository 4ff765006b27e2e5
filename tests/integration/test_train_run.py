"""``rayprism train`` end to end on the session's Ray: 2 workers, tiny model, the Debian sample.

The exported directory is loaded three ways (sentence-transformers, the service's encoder, and
after ``convert truncate``) and must give the same vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from rayprism.platform.config import ModelConfig, TrainConfig, load_train_config
from rayprism.platform.models.registry import load_encoder
from tests.conftest import cosines, embed

DATA = Path(__file__).resolve().parents[1] / "data"
TEXTS = ["software to read e-mail", "GNU C library: shared libraries", "a game of ancient warfare"]


def tiny_config(tmp_path: Path, model_path: str, name: str = "tiny", **sections) -> TrainConfig:
    """40 Debian queries → their documents, 2 workers of 4 queries, scored on the same 40 queries."""
    document = {
        "name": name,
        "model": {"source": model_path, "max_document_tokens": 48},
        "data": {"pairs": {"path": str(DATA / "debian-sample-queries.jsonl")},
                 "corpus": {"path": str(DATA / "debian-sample.jsonl")}},
        "evaluation": {"queries": str(DATA / "debian-sample-queries.jsonl"),
                       "corpus": {"path": str(DATA / "debian-sample.jsonl")}, "at_start": True},
        "hard_negatives": {"rank_from": 2, "rank_to": 10, "max_similarity_to_positive": 1.0},
        "training": {"batch_size": 8, "epochs": 1, "learning_rate": 1e-3, "log_every_steps": 2},
        "compute": {"num_workers": 2, "cpus_per_worker": 0.5},
        "checkpoints": {"every_steps": 2, "storage_path": str(tmp_path / "runs")},
        "output": str(tmp_path / "model"),
    }
    for section, values in sections.items():
        document[section] = {**document.get(section, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_train_config(path)


def test_two_workers_train_and_the_export_serves_as_it_loads(ray_session, tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from rayprism.trainers.convert.truncate import truncate_model
    from rayprism.trainers.run import execute

    config = tiny_config(tmp_path, tiny_model_path, loss={"matryoshka_dimensions": [16, 8]})
    lines: list[str] = []
    summary = execute(config, echo=lines.append)

    assert summary.steps == 5 and summary.attempts == 1  # 40 pairs / 8 per step
    assert any("mined 1 hard negative(s) per query from ranks 2–10 of 40 documents" in line for line in lines)
    steps = [line for line in lines if line.startswith("step ")]
    assert steps and all("samples/s" in line and "ETA" in line and "loss" in line for line in steps)
    assert [evaluation["epoch"] for evaluation in summary.evaluations] == [0, 1]

    output = Path(summary.output)
    record = json.loads((output / "training.json").read_text())
    assert record["matryoshka_dimensions"] == [16, 8]
    assert set(record["evaluations"][-1]["metrics"]) == {"mrr@10", "recall@1", "recall@10", "ndcg@10"}
    card = (output / "README.md").read_text()
    assert f"base_model: {tiny_model_path}" in card and "## Evaluation" in card and "| epoch 1 | 5 |" in card

    reference = SentenceTransformer(str(output), device="cpu").encode(TEXTS)
    served = embed(load_encoder(ModelConfig(source=str(output))), TEXTS).vectors
    assert cosines(served, reference).min() > 0.99999
    original = SentenceTransformer(tiny_model_path, device="cpu").encode(TEXTS)
    assert cosines(original, reference).max() < 0.9999  # training changed the model

    truncate_model(str(output), tmp_path / "model-8", dimensions=8)
    small = embed(load_encoder(ModelConfig(source=str(tmp_path / "model-8"))), TEXTS).vectors
    expected = reference[:, :8] / np.linalg.norm(reference[:, :8], axis=1, keepdims=True)
    assert small.shape == (3, 8) and np.allclose(small, expected, atol=1e-5)


def test_bad_rows_are_counted_and_reported(ray_session, tiny_model_path, tmp_path):
    from rayprism.trainers.data import read_corpus, read_pairs

    rows = [json.loads(line) for line in (DATA / "debian-sample-queries.jsonl").read_text().splitlines()]
    rows[0]["doc_id"] = 999_999
    rows[1]["query"] = "  "
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tiny_config(tmp_path, tiny_model_path, data={"pairs": {"path": str(pairs_file)},
                                                          "corpus": {"path": str(DATA / "debian-sample.jsonl")}})
    pairs = read_pairs(config, read_corpus(config.data.corpus))
    assert len(pairs) == 38 and pairs.rows_read == 40
    assert dict(pairs.rejected) == {"doc_id not in the corpus": 1, "no 'query'": 1}
    again = read_pairs(config, read_corpus(config.data.corpus))
    assert again.queries == pairs.queries  # the seeded order does not depend on Ray Data's
