"""The contrastive loss against sentence-transformers' own MultipleNegativesRankingLoss, and its views."""

import pytest
import torch
import torch.nn.functional as F

from rayprism.platform.config import LossConfig
from rayprism.platform.errors import ConfigError
from rayprism.trainers.losses import ContrastiveBatch, ContrastiveLoss, View, info_nce, views_for


def embeddings(n: int, k: int, d: int = 24, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(n, d, generator=generator)
    documents = torch.randn(n * (1 + k), d, generator=generator)
    return queries, documents


def reference(queries, positives, negatives, temperature, directions=("query_to_doc",)):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    loss = MultipleNegativesRankingLoss(model=None, scale=1 / temperature, directions=directions,
                                        partition_mode="per_direction")
    columns = [queries, positives, *negatives]
    return loss.compute_loss_from_embeddings(columns, labels=None)


@pytest.mark.parametrize("k", [0, 1])
def test_info_nce_is_multiple_negatives_ranking_loss(k):
    queries, documents = embeddings(8, k)
    keys = torch.arange(len(documents))
    ours = info_nce(queries, documents, keys, temperature=0.05)
    theirs = reference(queries, documents[:8], [documents[8:]] if k else [], 0.05)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_several_negatives_per_query_are_laid_out_query_major():
    queries, documents = embeddings(4, 3)
    keys = torch.arange(len(documents))
    ours = info_nce(queries, documents, keys, temperature=0.1)
    negatives = documents[4:].reshape(4, 3, -1)  # row i holds query i's three negatives
    theirs = reference(queries, documents[:4], [negatives[:, j] for j in range(3)], 0.1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_symmetric_adds_the_document_to_query_direction():
    queries, documents = embeddings(6, 0)
    ours = info_nce(queries, documents, torch.arange(6), temperature=0.05, symmetric=True)
    forward = info_nce(queries, documents, torch.arange(6), temperature=0.05)
    backward = F.cross_entropy(F.normalize(documents) @ F.normalize(queries).T / 0.05, torch.arange(6))
    assert torch.allclose(ours, (forward + backward) / 2, atol=1e-5)


def test_a_duplicate_of_the_positive_is_masked_not_a_negative():
    queries, documents = embeddings(4, 0)
    duplicated = documents.clone()
    duplicated[1] = duplicated[0]  # query 0's document appears again as query 1's
    keys = torch.tensor([7, 7, 8, 9])
    masked = info_nce(queries, duplicated, keys, temperature=0.05)
    # by hand: each row's softmax leaves out the other copy
    logits = F.normalize(queries) @ F.normalize(duplicated).T / 0.05
    logits[0, 1] = logits[1, 0] = float("-inf")
    assert torch.allclose(masked, F.cross_entropy(logits, torch.arange(4)), atol=1e-5)


def test_matryoshka_views_sum_losses_on_leading_dimensions():
    queries, documents = embeddings(5, 1, d=32)
    keys = torch.arange(len(documents))
    loss = ContrastiveLoss([View(None, None), View(None, 16, 0.5), View(None, 8)], temperature=0.05,
                           symmetric=False, gather=True)
    total = loss({None: ContrastiveBatch(queries, documents, keys)})
    expected = (info_nce(queries, documents, keys, temperature=0.05)
                + 0.5 * info_nce(queries[:, :16], documents[:, :16], keys, temperature=0.05)
                + info_nce(queries[:, :8], documents[:, :8], keys, temperature=0.05))
    assert torch.allclose(total, expected, atol=1e-5)
    assert loss.backward_scale == 1.0  # one process: nothing to undo


def test_views_from_config_are_checked_against_the_model():
    assert views_for(LossConfig(), model_dimensions=384, model_layers=6) == [View(None, None)]
    views = views_for(LossConfig(matryoshka_dimensions=[384, 128]), model_dimensions=384, model_layers=6)
    assert views == [View(None, None), View(None, 128)]
    starbucks = views_for(LossConfig(starbucks=[(2, 32), (4, 128), (6, 384)]), model_dimensions=384,
                          model_layers=6)
    assert starbucks == [View(2, 32), View(4, 128), View(None, None)]
    with pytest.raises(ConfigError, match=r"\[512\] exceed the model's 384"):
        views_for(LossConfig(matryoshka_dimensions=[512]), model_dimensions=384, model_layers=6)
    with pytest.raises(ConfigError, match=r"\[8, 64\] exceeds the model's 6 layers"):
        views_for(LossConfig(starbucks=[(8, 64)]), model_dimensions=384, model_layers=6)
    layered = ContrastiveLoss(starbucks, temperature=0.05, symmetric=False, gather=True)
    assert layered.layers == [2, 4, None]
