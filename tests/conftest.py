"""Fixtures shared by unit and integration tests: models are made or loaded once per session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayprism.platform.threads import quiet_tokenizers

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
quiet_tokenizers()

from rayprism.platform.config import DEFAULT_MODEL_SOURCE  # noqa: E402
from rayprism.platform.models.source import resolve_source  # noqa: E402


def make_tiny_model(directory: Path, *, pooling: str = "cls", include_prompt: bool = True,
                    prompts: dict[str, str] | None = None, default_prompt_name: str | None = None) -> Path:
    """A 2-layer BERT with CLS pooling, a Dense head to 16 dims and normalisation, saved as a
    sentence-transformers directory: a model whose pooling differs from MiniLM's. ``prompts`` are
    saved in its config_sentence_transformers.json, as models such as E5 or BGE declare them."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(DEFAULT_MODEL_SOURCE))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory / "hf")
    tokenizer.save_pretrained(directory / "hf")
    modules = [
        Transformer(str(directory / "hf"), max_seq_length=64),
        Pooling(32, pooling_mode=pooling, include_prompt=include_prompt),
        Dense(32, 16),
        Normalize(),
    ]
    model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt_name)
    model.save(str(directory / "st"))
    return directory / "st"


def make_tiny_reranker(directory: Path, *, num_labels: int = 1) -> Path:
    """A 2-layer BERT cross-encoder saved as a sentence-transformers CrossEncoder directory. Its weights
    are drawn wide (``initializer_range``) so that scores spread over (0, 1) instead of all sitting near
    0.5: orders are then decided by the model, not by float noise."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(DEFAULT_MODEL_SOURCE))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels, initializer_range=0.5,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory / "hf")
    tokenizer.save_pretrained(directory / "hf")
    CrossEncoder(str(directory / "hf"), max_length=64).save(str(directory / "st"))
    return directory / "st"


@pytest.fixture(scope="session")
def tiny_reranker_path(tmp_path_factory) -> str:
    return str(make_tiny_reranker(tmp_path_factory.mktemp("tiny-reranker")))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    return resolve_source(DEFAULT_MODEL_SOURCE)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def prompted_model_path(tmp_path_factory) -> str:
    """A tiny model with query/document prompts whose mean pooling leaves the prompt out (as INSTRUCTOR does)."""
    prompts = {"query": "query: ", "document": "passage: ", "classification": "classify this: "}
    return str(make_tiny_model(tmp_path_factory.mktemp("prompted-model"), pooling="mean", include_prompt=False,
                               prompts=prompts))


@pytest.fixture(scope="session")
def reference_minilm(minilm_path):
    """sentence-transformers' own MiniLM: the reference every served vector is compared to."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


def embed(encoder, inputs, modality="text", prompt_name=None, truncate=True):
    """Both stages in this thread, as a model runner runs them without the batcher between:
    (vectors, token counts) for one call."""
    from rayprism.platform.models.base import Embeddings

    prepared = encoder.prepare(inputs, modality, prompt_name, truncate=truncate)
    return Embeddings(encoder.encode(prepared), [item.n_tokens for item in prepared])


def cosines(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="session")
def media_model_path(tmp_path_factory):
    """``media_model_path(kind)``: the directory of a tiny model of ``tests.media_models.BUILDERS``, built once."""
    from functools import cache

    from tests.media_models import BUILDERS

    return cache(lambda kind: str(BUILDERS[kind](tmp_path_factory.mktemp(kind))))


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory) -> str:
    """One real Milvus server for the session (PyPI's embedded ``milvus``, in the dev extra), on ports of
    its own: the store's server path is tested against it."""
    pytest.importorskip("milvus", reason="the Milvus server comes with the dev extra: pip install -e '.[dev]'")
    from tests.milvus_server import milvus_server

    with milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


STORE_PATHS = ["mirror", "lite", "server"]
"""The three ways a store answers: Milvus Lite with its in-memory mirror, Lite without one, the Milvus server."""


@contextlib.contextmanager
def store_on_path(request, tmp_path: Path) -> Iterator:
    """A ``MilvusStore`` on the path ``request.param`` names (one of :data:`STORE_PATHS`), with ``store.path`` set to
    it; on leaving, the collections it made are dropped and it is closed."""
    from rayprism.platform.store.milvus import MilvusStore

    if request.param == "server":
        store = MilvusStore(request.getfixturevalue("milvus_server_uri"), flush_after_s=600)
    else:
        store = MilvusStore(str(tmp_path / "store.db"), flush_after_s=0.1,
                            cache_max_rows=10_000 if request.param == "mirror" else 0)
    store.path = request.param
    before = set(store.names())
    try:
        yield store
    finally:
        drop_new_collections(store, before)
        store.close()


def drop_new_collections(store, before: set[str]) -> None:
    """Drop the collections made since ``before`` (and aliases pointing at them): the session's one Milvus
    server also holds what other tests (integration ones too) left there, which is theirs to keep."""
    for name in sorted(set(store.names()) - before):
        for alias in store.aliases.pointing_at(name):
            store.aliases.remove(alias)
        store.drop(name)
