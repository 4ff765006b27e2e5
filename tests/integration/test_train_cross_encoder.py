"""``objective: cross_encoder`` end to end on the session's Ray: 1 worker, the tiny bi-encoder as base
and retriever, the Debian sample. Training must separate each query's document from the others better
than the freshly headed model did, and the export must score the same through sentence-transformers'
``CrossEncoder`` and the service's reranker backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rayprism.platform.config import ModelConfig
from rayprism.platform.models.registry import load_encoder
from tests.integration.test_train_run import DATA, tiny_config


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def separation(model_dir: str, pairs) -> float:
    """Mean over the queries of the share of their training negatives scored below their positive."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_dir, device="cpu")
    shares = []
    for query, positive, negatives in zip(pairs.queries, pairs.positives, pairs.negatives):
        scores = model.predict([(query, positive), *((query, negative) for negative in negatives)])
        shares.append(float(np.mean(scores[1:] < scores[0])))
    return float(np.mean(shares))


def test_one_worker_trains_a_reranker_that_serves_as_it_loads(ray_session, tiny_model_path, tmp_path):
    from sentence_transformers import CrossEncoder

    from rayprism.trainers.data import read_corpus, read_pairs
    from rayprism.trainers.run import execute, mine, retriever_path, run_directory

    config = tiny_config(
        tmp_path, tiny_model_path, name="reranker", objective="cross_encoder",
        cross_encoder={"candidates": 20, "positive_weight": 2.0},
        hard_negatives={"per_query": 2, "rank_from": 1, "rank_to": 10, "max_similarity_to_positive": 1.0},
        evaluation={"at_start": False, "every_epochs": 20},
        # a 2-layer BERT from random weights: its cross-attention takes ~100 steps to start matching
        training={"batch_size": 8, "epochs": 60, "learning_rate": 1e-3, "warmup_ratio": 0.0, "log_every_steps": 50},
        compute={"num_workers": 1, "cpus_per_worker": 1},
        checkpoints={"every_steps": 50},
    )
    lines: list[str] = []
    summary = execute(config, echo=lines.append)

    assert summary.steps == 300 and summary.attempts == 1  # 40 pairs / 8 per step × 60 epochs
    assert any("mined 2 hard negative(s) per query from ranks 1–10 of 40 documents" in line for line in lines)
    assert any(line.startswith("training a cross-encoder (binary cross-entropy): 300 steps") for line in lines)
    labels = [evaluation.get("label") or evaluation["epoch"] for evaluation in summary.evaluations]
    assert labels[0].startswith("retriever, exact dense search") and labels[1:] == [20, 40, 60]
    assert all(set(e["metrics"]) == {"mrr@10", "recall@1", "recall@10", "ndcg@10"} for e in summary.evaluations)

    # the negatives the run trained on: mined again from its cached vectors, by the same seed
    corpus = read_corpus(config.data.corpus)
    pairs = read_pairs(config, corpus)
    mine(config, pairs, corpus, retriever_path(config), run_directory(config), lines.append)
    assert "vectors from cache" in lines[-1] and all(len(negatives) == 2 for negatives in pairs.negatives)
    before = separation(str(run_directory(config) / "initial"), pairs)
    after = separation(summary.output, pairs)
    assert after > max(before + 0.3, 0.9), (before, after, [line for line in lines if "loss" in line])
    retrieved, trained = summary.evaluations[0]["metrics"], summary.evaluations[-1]["metrics"]
    assert trained["mrr@10"] > retrieved["mrr@10"] + 0.1, (retrieved, trained)  # reranking the candidates helps

    queries = read_jsonl(DATA / "debian-sample-queries.jsonl")
    documents = {str(row["id"]): row["text"] for row in read_jsonl(DATA / "debian-sample.jsonl")}
    output = Path(summary.output)
    record = json.loads((output / "training.json").read_text())
    assert record["objective"] == "cross_encoder" and record["loss"]["positive_weight"] == 2.0
    card = (output / "README.md").read_text()
    assert "pipeline_tag: text-ranking" in card and "kind: reranker" in card and "| epoch 60 | 300 |" in card

    pairs = [(query["query"], documents[str(other["doc_id"])]) for query in queries[:4] for other in queries[:5]]
    reference = CrossEncoder(str(output), device="cpu").predict(pairs)
    served = load_encoder(ModelConfig(name="judge", kind="reranker", source=str(output)))
    scores = np.concatenate([served.score(served.prepare_pairs(query, [documents[str(o["doc_id"])]
                                                                       for o in queries[:5]]))
                             for query in [q["query"] for q in queries[:4]]])
    np.testing.assert_allclose(scores, reference, atol=1e-5)
    assert np.ptp(reference) > 0.5  # scores apart, not one constant


def test_two_workers_rerank_given_candidates_as_the_exported_model_does(ray_session, tiny_model_path, tmp_path):
    """Evaluation split across 2 workers (DDP training, all-gathered scores) on candidates the queries file
    lists: the run's last scores equal the exported reranker's, scored here in one process."""
    from rayprism.platform.models.cross_encoder import CrossEncoderScorer
    from rayprism.trainers.cross_encoder import rerank_scores, reranked
    from rayprism.trainers.data import read_evaluation
    from rayprism.trainers.evaluation import score_rankings
    from rayprism.trainers.run import execute

    rng = np.random.default_rng(0)
    queries = read_jsonl(DATA / "debian-sample-queries.jsonl")
    ids = [str(row["id"]) for row in read_jsonl(DATA / "debian-sample.jsonl")]
    with (tmp_path / "queries.jsonl").open("w") as file:
        for query in queries:
            others = [doc_id for doc_id in rng.permutation(ids)[:12].tolist() if doc_id != str(query["doc_id"])]
            hits = others[:11]
            hits.insert(int(rng.integers(12)), str(query["doc_id"]))
            file.write(json.dumps({**query, "hits": hits}) + "\n")
    config = tiny_config(
        tmp_path, tiny_model_path, name="given", objective="cross_encoder",
        cross_encoder={"candidates": 12, "candidates_field": "hits"}, hard_negatives=None,
        evaluation={"queries": str(tmp_path / "queries.jsonl"), "at_start": False},
        training={"batch_size": 8, "epochs": 1, "learning_rate": 1e-3},
    )
    summary = execute(config, echo=lambda line: None)
    assert summary.steps == 5 and [e.get("label") or e["epoch"] for e in summary.evaluations] == [
        "given candidates (hits)", 1]

    evaluation = read_evaluation(config.evaluation, candidates_field="hits", candidates=12)
    assert evaluation.candidates.shape == (40, 12) and (evaluation.candidates >= 0).all()
    given = score_rankings(evaluation.candidates, evaluation.relevant).as_dict()
    assert summary.evaluations[0]["metrics"] == given
    scorer = CrossEncoderScorer(summary.output)
    scores = rerank_scores(scorer, evaluation.queries, evaluation.candidates, evaluation.corpus)
    here = score_rankings(reranked(evaluation.candidates, scores), evaluation.relevant).as_dict()
    assert summary.evaluations[-1]["metrics"] == pytest.approx(here, abs=1e-9)
