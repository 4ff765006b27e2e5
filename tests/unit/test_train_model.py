"""The trainer embeds as the service does: same prompts, same pooling, length-sorted passes in input order."""

import numpy as np
import pytest
import torch

from rayprism.trainers.losses import ContrastiveBatch, ContrastiveLoss, View
from rayprism.trainers.model import Embedder, TrainableModel
from tests.conftest import cosines

TEXTS = ["short", "a somewhat longer sentence about Debian packages and their descriptions",
         "medium length text here", "x " * 40, "another one"]


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return TrainableModel(tiny_model_path, forward_batch_size=2, max_document_tokens=64)


def test_encode_matches_sentence_transformers_and_the_served_encoder(tiny, tiny_model_path):
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import ModelConfig
    from rayprism.platform.models.registry import load_encoder
    from tests.conftest import embed

    ours = tiny.encode(TEXTS, "document")
    reference = SentenceTransformer(tiny_model_path, device="cpu").encode(TEXTS, normalize_embeddings=True)
    served = embed(load_encoder(ModelConfig(source=tiny_model_path)), TEXTS).vectors
    assert np.allclose(ours, reference, atol=1e-5)
    assert cosines(ours, served).min() > 0.99999


def test_chunks_are_length_sorted_and_cover_every_row(tiny):
    chunks = tiny.text_chunks(TEXTS, "document")
    assert sorted(row for chunk in chunks for row in chunk.rows) == list(range(len(TEXTS)))
    widths = [chunk.features["input_ids"].shape[1] for chunk in chunks]
    assert widths == sorted(widths, reverse=True) and all(len(chunk.rows) <= 2 for chunk in chunks)


def test_prompts_follow_the_role(prompted_model_path):
    from rayprism.platform.config import ModelConfig
    from rayprism.platform.models.registry import load_encoder
    from tests.conftest import embed

    model = TrainableModel(prompted_model_path)
    assert model.prompts == {"query": "query: ", "document": "passage: "}
    served = load_encoder(ModelConfig(source=prompted_model_path))
    for role, prompt_name in (("query", "query"), ("document", "document")):
        expected = embed(served, TEXTS, "text", prompt_name).vectors
        assert cosines(model.encode(TEXTS, role), expected).min() > 0.99999


def test_a_layer_view_of_the_last_layer_is_the_models_output(tiny):
    tiny.st.eval()
    embedder = Embedder(tiny.st, [1, 2, None])
    with torch.no_grad():
        (outputs,) = embedder([tiny.text_chunks(TEXTS, "document")])
    assert torch.allclose(outputs[2], outputs[None], atol=1e-5)
    assert not torch.allclose(outputs[1], outputs[None], atol=1e-3)


def test_one_training_step_lowers_the_loss_on_its_batch(tiny):
    queries, documents = ["alpha query", "beta query", "gamma query"], ["alpha doc", "beta doc", "gamma doc"]
    torch.manual_seed(0)  # dropout is on in train mode: the same masks whatever ran before
    tiny.st.train()
    embedder = Embedder(tiny.st)
    loss_fn = ContrastiveLoss([View(None, None)], temperature=0.05, symmetric=False, gather=True)
    optimizer = torch.optim.AdamW(tiny.st.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        query_out, document_out = embedder([tiny.text_chunks(queries, "query"), tiny.text_chunks(documents, "document")])
        loss = loss_fn({None: ContrastiveBatch(query_out[None], document_out[None], torch.arange(3))})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
