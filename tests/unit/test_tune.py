"""``rayprism tune``'s plain parts, without Ray or a service: the query split, the space's settings, the scores,
the Pareto front and the choice."""

import pytest

from rayprism.jobs.tune import (
    CANDIDATE_CHOICES,
    Query,
    Scores,
    SearchSpace,
    TrialResult,
    choose,
    current_settings,
    default_space,
    label,
    pareto_front,
    queries_of,
    scores_of,
    search_body,
    split_queries,
)
from rayprism.platform.api.requests import SearchRequest
from rayprism.platform.config import SearchDefaults

QUERIES = [Query(f"query {n}", frozenset({str(n)})) for n in range(100)]
HYBRID = {"name": "c", "bm25": True, "multivector": None, "modality": "text", "search_defaults": None, "count": 3}


def test_the_split_is_seeded_disjoint_and_complete():
    tuning, held_out = split_queries(QUERIES, 0.3, seed=1)
    assert len(held_out) == 30 and len(tuning) == 70
    assert set(tuning).isdisjoint(held_out) and set(tuning) | set(held_out) == set(QUERIES)
    assert split_queries(QUERIES, 0.3, seed=1) == (tuning, held_out)
    assert split_queries(QUERIES, 0.3, seed=2) != (tuning, held_out)
    assert tuning != QUERIES[30:]  # shuffled: the file's order (often grouped) does not decide the split
    assert split_queries(QUERIES, 0.0) == (split_queries(QUERIES, 0.0)[0], [])
    assert len(split_queries(QUERIES[:5], 0.01)[1]) == 1  # any holdout above 0 keeps at least one query out
    with pytest.raises(ValueError, match="at least 2 to tune on"):
        split_queries(QUERIES[:3], 0.5)
    with pytest.raises(ValueError, match=r"holdout must be in \[0, 1\)"):
        split_queries(QUERIES, 1.0)


def test_query_rows_as_the_reembed_reader_gives_them():
    assert queries_of([{"query": "q", "relevant": ["1", "b"]}]) == [Query("q", frozenset({"1", "b"}))]


def test_scores_count_the_first_relevant_rank_and_the_share_of_relevant_found():
    queries = [Query("a", frozenset({"1"})), Query("b", frozenset({"2", "3"})), Query("c", frozenset({"9"}))]
    ranked = [["1", "5"], ["7", "3", "2"], [str(n) for n in range(20)]]  # c's target ranks 10th: still counted
    scores = scores_of(queries, ranked, [0.010, 0.020, 0.030])
    assert scores.mrr_at_10 == pytest.approx((1 + 1 / 2 + 1 / 10) / 3)
    assert scores.recall_at_10 == pytest.approx((1 + 1 + 1) / 3)
    assert (scores.p50_ms, scores.queries) == (pytest.approx(20.0), 3)
    beyond = scores_of([Query("d", frozenset({"11"}))], [[str(n) for n in range(20)]], [0.001])
    assert beyond.mrr_at_10 == 0 and beyond.recall_at_10 == 0


def test_every_trial_config_becomes_settings_a_search_accepts_and_back():
    from ray.tune.search.variant_generator import generate_variants

    space = SearchSpace(modes=("hybrid",), fusion=True, candidates=CANDIDATE_CHOICES, reranker="judge")
    seen = set()
    for _ in range(60):
        _, config = next(generate_variants(space.param_space()))
        settings = space.settings(config)
        body = search_body(settings, "a query")
        parsed = SearchRequest.model_validate(body)  # the service's own schema takes it
        assert parsed.model_fields_set >= {"mode", "fusion", "candidates", "rerank"}  # every setting given
        assert space.settings(space.point(settings)) == settings
        scale = settings.fusion.normalization if settings.fusion.type == "weighted" else "rank"
        seen.add((scale, settings.rerank is not None))
        if settings.fusion.type == "weighted":
            assert settings.fusion.weights.dense + settings.fusion.weights.sparse == pytest.approx(1)
    assert seen == {(scale, rerank) for scale in ("min_max", "z_score", "rank") for rerank in (False, True)}


def test_the_default_space_follows_the_collection():
    hybrid = default_space(HYBRID)
    assert hybrid.modes == ("hybrid",) and hybrid.fusion and hybrid.reranker is None
    current = current_settings(HYBRID)
    points = hybrid.points(current)
    assert hybrid.settings(points[0]) == current  # the current settings run first
    assert [label(hybrid.settings({**points[0], **point})) for point in points[1:]] == [
        "dense", "sparse", "hybrid weighted z-score 0.5/0.5, 50 candidates", "hybrid rrf k=60, 50 candidates"]
    rrf_now = SearchDefaults(mode="hybrid", fusion={"type": "rrf"}, candidates=50)
    assert len(hybrid.points(rrf_now)) == 4  # a fixed point that repeats the current settings runs once
    assert all(point.get("rerank") is False for point in default_space(HYBRID, "judge").points(current)[1:])
    assert default_space(HYBRID, reranker="judge").reranker == "judge"
    with_rerank = {**HYBRID, "search_defaults": {"rerank": {"model": "judge"}}}
    assert default_space(with_rerank).reranker == "judge"  # a rerank stage in use stays in the space
    multivector = default_space({**HYBRID, "multivector": {"candidates": 200}})
    assert multivector.modes == ("multivector",) and not multivector.fusion
    dense_only = default_space({**HYBRID, "bm25": False})
    assert dense_only.modes == ("dense",) and not dense_only.fixed_points
    assert default_space({**HYBRID, "modality": "image"}, reranker="judge").reranker is None


def test_current_settings_spell_out_what_a_plain_search_runs_with():
    built_in = current_settings(HYBRID)
    assert (built_in.mode, built_in.fusion.type, built_in.candidates, built_in.rerank) == ("hybrid", "weighted", 50,
                                                                                            None)
    assert label(built_in) == "hybrid weighted 0.5/0.5, 50 candidates"
    applied = current_settings({**HYBRID, "search_defaults": {"mode": "sparse"}})
    assert (applied.mode, applied.fusion, applied.candidates) == ("sparse", None, None)
    multivector = current_settings({**HYBRID, "multivector": {"candidates": 200}})
    assert (multivector.mode, multivector.candidates) == ("multivector", 200)


def test_a_plain_body_leaves_every_setting_to_the_collection():
    assert search_body(None, "q") == {"query": "q", "k": 10}
    explicit = search_body(SearchDefaults(mode="dense"), "q")
    assert explicit["rerank"] is None and explicit["candidates"] is None and explicit["fusion"]["type"] == "weighted"


def result(number, mrr, p50, *, complete=True, p95=None):
    return TrialResult(number, SearchDefaults(mode="hybrid"), Scores(mrr, mrr, p50, p95 or 2 * p50, 100), complete)


def test_the_front_keeps_each_trial_no_other_beats_on_both_quality_and_latency():
    trials = [result(1, 0.80, 20), result(2, 0.84, 30), result(3, 0.82, 35), result(4, 0.70, 5),
              result(5, 0.84, 40), result(6, 0.90, 12, complete=False), result(7, 0.85, 60), result(8, 0.80, 20)]
    front = pareto_front(trials)
    assert [trial.number for trial in front] == [4, 1, 2, 7]  # fastest first; 8 ties 1, 5 and 3 are beaten by 2
    for kept in front:  # independently: nothing complete is at least as good on both and better on one
        assert not any(other.complete and other.scores.mrr_at_10 >= kept.scores.mrr_at_10
                       and other.scores.p50_ms <= kept.scores.p50_ms and other.number != kept.number
                       and (other.scores.mrr_at_10, -other.scores.p50_ms) != (kept.scores.mrr_at_10, -kept.scores.p50_ms)
                       for other in trials)
    assert pareto_front([result(1, 0.9, 10, complete=False)]) == []


def test_the_choice_is_the_best_quality_within_the_latency_bound():
    front = pareto_front([result(1, 0.70, 5), result(2, 0.84, 30), result(3, 0.85, 60)])
    assert choose(front).number == 3
    assert choose(front, max_p95_ms=100).number == 2  # trial 3's p95 is 120 ms
    assert choose(front, max_p95_ms=1) is None
