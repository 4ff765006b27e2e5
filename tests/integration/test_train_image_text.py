"""The trainer's image–text path: a small CLIP trained from scratch on scikit-learn's digits, then
served (the torch backend's CLIP encoder) for zero-shot classification and text→image search."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import yaml

from rayprism.platform.config import ModelConfig, load_train_config
from rayprism.platform.models.registry import load_encoder
from tests.conftest import embed


def test_digits_clip_classifies_held_out_digits_zero_shot(ray_session, tmp_path):
    from rayprism.trainers.digits import PROMPT, WORDS, write_digits
    from rayprism.trainers.run import execute

    data = write_digits(tmp_path / "digits")
    document = yaml.safe_load((__import__("pathlib").Path(__file__).resolve().parents[2] / "configs"
                               / "train-digits.yaml").read_text())
    document["data"]["pairs"]["path"] = str(data / "train.parquet")
    document["evaluation"]["queries"] = str(data / "test.parquet")
    document["evaluation"]["corpus"]["path"] = str(data / "classes.jsonl")
    document["checkpoints"]["storage_path"] = str(tmp_path / "runs")
    document["output"] = str(tmp_path / "digits-clip")
    document["compute"]["cpus_per_worker"] = 1  # the session's Ray has 2 CPUs and its serving replica holds one
    (tmp_path / "digits.yaml").write_text(yaml.safe_dump(document))
    lines: list[str] = []
    summary = execute(load_train_config(tmp_path / "digits.yaml"), echo=lines.append)
    reported = summary.evaluations[-1]["metrics"]["recall@1"]

    encoder = load_encoder(ModelConfig(source=summary.output, modality="image"))
    assert encoder.modalities == {"image", "text"}
    test = pq.read_table(data / "test.parquet").to_pydict()
    images = embed(encoder, test["image"], "image").vectors
    prompts = embed(encoder, [PROMPT.format(word=word) for word in WORDS], "text").vectors
    labels = np.array(test["label"])
    accuracy = float(((images @ prompts.T).argmax(axis=1) == labels).mean())
    assert accuracy >= 0.8, lines
    assert abs(accuracy - reported) < 0.02  # the job scored what the service serves

    # text→image search: each prompt's 10 nearest held-out images are mostly that digit
    nearest = np.argsort(-(prompts @ images.T), axis=1)[:, :10]
    precision = float((labels[nearest] == np.arange(10)[:, None]).mean())
    assert precision >= 0.8
