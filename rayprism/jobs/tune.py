"""``rayprism tune``: a Ray Tune search over a collection's search settings, against the live service.

A trial is one set of settings (mode, fusion and its weights or k, candidates, and a rerank stage when the space
has one), scored by searching the service through the SDK with the tuning queries one at a time: MRR@10 and
Recall@10 of their relevant ids, and the p50/p95 latency of those searches as the client saw them (under the load
of the trials running beside it). Trials run in parallel as Ray actors (on the cluster Ray joins, or a local Ray)
and report after each slice of the queries, all in the same order, so ASHA compares them on the same queries and
stops the ones that trail early. The trials that saw every tuning query make the Pareto front (MRR@10 against p50
latency); the best of them (within a latency bound if one is given) is re-scored on the held-out queries beside
the collection's current defaults, one search at a time, and may be applied as its search defaults.

Nothing here imports Ray until a search runs: the split, the space, the front and the scores are plain Python.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from rayprism.platform.config.search import DEFAULT_FUSION, RRF_K, SearchDefaults
from rayprism.platform.ranking import CUTOFF, first_relevant_ranks, mean_reciprocal_rank
from rayprism.platform.store.vocabulary import DEFAULT_CANDIDATES

DEFAULT_TRIALS = 24
"""Trials of a run unless told: with ASHA most stop after an eighth of the queries (bench/tune.py: minutes here)."""
DEFAULT_HOLDOUT = 0.3
"""The share of the queries kept out of the search, to score its choice on queries it did not see."""
DEFAULT_CONCURRENCY = 4
"""Trials searching at once: each sends one search at a time, so this is the load the service sees."""
SLICES = 8
"""A trial reports after each eighth of the tuning queries: ASHA's rungs are at 1/8 and 3/8 of them."""
REDUCTION_FACTOR = 3
"""ASHA keeps the best third of the trials at each rung."""
TRIAL_CPUS = 0.25
"""What one trial reserves: it waits on HTTP almost all the time."""
CANDIDATE_CHOICES = (10, 20, 30, 50, 75, 100, 150, 200, 300)
"""Hits taken from each route before fusion (hybrid)."""
MULTIVECTOR_CANDIDATE_CHOICES = (25, 50, 100, 200, 400, 800)
"""Documents reranked by MaxSim (multivector)."""
RETIME_QUERIES = 100
"""Tuning queries each complete trial searches again after the search, all of them in turn one search at a time,
so that the front's latencies are measured alike (in the search they depend on how many trials ran beside)."""
RERANK_CANDIDATE_CHOICES = (10, 20, 30, 50)
"""Hits a rerank stage rescores: each costs a cross-encoder pass per search."""
FUSIONS = ("min_max", "z_score", "rrf")
"""Fusions of a hybrid search sampled, evenly: weighted on min-max scores (the default), weighted on z-scores
(``WeightedFusion.normalization``), and reciprocal rank fusion."""
RRF_K_RANGE = (5, 200)
"""Reciprocal rank fusion's k, sampled on a log scale."""
DENSE_WEIGHT_RANGE = (0.1, 0.9)
"""Weighted fusion's dense weight (the sparse one is 1 minus it); 0 and 1 are the single modes, tried as such."""


# --- queries -------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    text: str
    relevant: frozenset[str]
    """The ids of the documents that answer it (as strings: the service answers string ids)."""


def queries_of(rows: Iterable[dict]) -> list[Query]:
    """``{"query", "relevant": [ids]}`` rows (what ``rayprism reembed --queries`` reads) as queries."""
    return [Query(row["query"], frozenset(str(doc_id) for doc_id in row["relevant"])) for row in rows]


def split_queries(queries: Sequence[Query], holdout: float, seed: int = 0) -> tuple[list[Query], list[Query]]:
    """(tuning, held-out): a seeded shuffle, ``holdout`` of the queries (rounded, at least one when above 0) held
    out; the tuning ones keep their shuffled order, the order every trial searches them in."""
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    order = list(queries)
    random.Random(seed).shuffle(order)
    held = max(1, round(len(order) * holdout)) if holdout > 0 else 0
    if len(order) - held < 2:
        raise ValueError(f"{len(order)} queries leave {len(order) - held} to tune on with holdout {holdout}: "
                         "give at least 2 to tune on")
    return order[held:], order[:held]


# --- scores --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    mrr_at_10: float
    recall_at_10: float
    p50_ms: float
    p95_ms: float
    queries: int


def scores_of(queries: Sequence[Query], ranked: Sequence[Sequence[str]], latencies_s: Sequence[float]) -> Scores:
    """MRR@10 and Recall@10 of ``ranked`` (each query's ids, best first), and the latencies' p50/p95 in ms."""
    relevant = [query.relevant for query in queries]
    ranks = first_relevant_ranks(ranked, relevant)
    recall = [len(wanted & set(ids[:CUTOFF])) / len(wanted) if wanted else 0.0
              for ids, wanted in zip(ranked, relevant)]
    latencies_ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    return Scores(mrr_at_10=mean_reciprocal_rank(ranks), recall_at_10=float(np.mean(recall)) if recall else 0.0,
                  p50_ms=float(np.percentile(latencies_ms, 50)) if len(latencies_ms) else 0.0,
                  p95_ms=float(np.percentile(latencies_ms, 95)) if len(latencies_ms) else 0.0, queries=len(queries))


# --- settings and the space ----------------------------------------------------------


def search_body(settings: SearchDefaults | None, query: str, k: int = CUTOFF) -> dict:
    """The body of a search with ``settings``, each one given (null where the built-in one is meant), so that the
    collection's own defaults play no part; None: a plain search, which the collection's defaults shape."""
    if settings is None:
        return {"query": query, "k": k}
    return {"query": query, "k": k, "mode": settings.mode,
            "fusion": (settings.fusion or DEFAULT_FUSION).model_dump(mode="json"), "candidates": settings.candidates,
            "rerank": settings.rerank.model_dump(mode="json") if settings.rerank is not None else None}


def label(settings: SearchDefaults | None) -> str:
    """Settings in a few words: ``hybrid weighted 0.62/0.38, 80 candidates + rerank 20 @ 0.5``."""
    if settings is None:
        return "the collection's defaults"
    parts = [settings.mode or "default mode"]
    if settings.mode in (None, "hybrid"):
        fusion = settings.fusion or DEFAULT_FUSION
        if fusion.type == "rrf":
            parts.append(f"rrf k={fusion.k}")
        else:
            scale = " z-score" if fusion.normalization == "z_score" else ""
            parts.append(f"weighted{scale} {fusion.weights.dense:g}/{fusion.weights.sparse:g}")
    text = " ".join(parts)
    if settings.candidates is not None and settings.mode in (None, "hybrid", "multivector"):
        text += f", {settings.candidates} candidates"
    if settings.rerank is not None:
        text += f" + rerank {settings.rerank.candidates} @ {settings.rerank.weight:g}"
    return text


@dataclass(frozen=True)
class SearchSpace:
    """What a run searches over: a trial's config is a flat dict of these keys (Ray Tune samples each one; keys a
    config does not use, such as ``rrf_k`` under weighted fusion, are ignored by :meth:`settings`)."""

    modes: tuple[str, ...]
    """Modes sampled (the single modes of a hybrid collection are tried once each, as fixed points)."""
    fusion: bool
    """Whether fusion is tuned (a collection with BM25 and dense)."""
    candidates: tuple[int, ...]
    reranker: str | None = None
    """A served reranker to try as a last stage (None: no rerank stage in the space)."""
    fixed_points: tuple[dict, ...] = ()
    """Trial configs run before the sampled ones (keys left out are sampled; a rerank stage is left out)."""

    def points(self, current: SearchDefaults) -> list[dict]:
        """The trials run first: the current settings, then the fixed points (none repeating the current ones)."""
        first = self.point(current)
        fixed = [{**point, **({"rerank": False} if self.reranker is not None else {})} for point in self.fixed_points]
        return [first, *(point for point in fixed if self.settings({**first, **point}) != self.settings(first))]

    def param_space(self) -> dict:
        """The space as Ray Tune samples it."""
        from ray import tune

        space: dict[str, Any] = {"mode": tune.choice(list(self.modes)), "candidates": tune.choice(list(self.candidates))}
        if self.fusion:
            space.update(fusion=tune.choice(list(FUSIONS)), dense_weight=tune.uniform(*DENSE_WEIGHT_RANGE),
                         rrf_k=tune.lograndint(RRF_K_RANGE[0], RRF_K_RANGE[1] + 1))
        if self.reranker is not None:
            space.update(rerank=tune.choice([False, True]), rerank_candidates=tune.choice(list(RERANK_CANDIDATE_CHOICES)),
                         rerank_weight=tune.uniform(0.0, 1.0))
        return space

    def settings(self, config: dict) -> SearchDefaults:
        """A trial's config as search settings, every one given."""
        mode = config["mode"]
        fusion = None
        if mode == "hybrid":
            if config.get("fusion") == "rrf":
                fusion = {"type": "rrf", "k": int(config["rrf_k"])}
            else:
                dense = round(float(config.get("dense_weight", 0.5)), 3)
                fusion = {"type": "weighted", "weights": {"dense": dense, "sparse": round(1 - dense, 3)},
                          "normalization": config.get("fusion", "min_max")}
        candidates = int(config["candidates"]) if mode in ("hybrid", "multivector") else None
        rerank = None
        if config.get("rerank") and self.reranker is not None:
            rerank = {"model": self.reranker, "candidates": int(config["rerank_candidates"]),
                      "weight": round(float(config["rerank_weight"]), 3)}
        return SearchDefaults(mode=mode, fusion=fusion, candidates=candidates, rerank=rerank)

    def point(self, settings: SearchDefaults) -> dict:
        """The trial config of ``settings`` (each one given): the inverse of :meth:`settings`."""
        fusion = settings.fusion or DEFAULT_FUSION
        point: dict[str, Any] = {"mode": settings.mode, "candidates": settings.candidates or DEFAULT_CANDIDATES}
        if self.fusion:
            weighted = fusion.type == "weighted"
            point.update(fusion=fusion.normalization if weighted else "rrf",
                         dense_weight=fusion.weights.dense / (fusion.weights.dense + fusion.weights.sparse or 1)
                         if weighted else 0.5,
                         rrf_k=fusion.k if not weighted else RRF_K)
        if self.reranker is not None:
            rerank = settings.rerank
            point.update(rerank=rerank is not None, rerank_candidates=rerank.candidates if rerank else 20,
                         rerank_weight=rerank.weight if rerank else 0.5)
        return point


HYBRID_POINTS = (
    {"mode": "dense"},
    {"mode": "sparse"},
    {"mode": "hybrid", "fusion": "z_score", "dense_weight": 0.5, "candidates": DEFAULT_CANDIDATES},
    {"mode": "hybrid", "fusion": "rrf", "rrf_k": RRF_K, "candidates": DEFAULT_CANDIDATES},
)
"""A hybrid collection's trials run as they are before the sampled ones: each route alone (the fast end of the
front), and the other two fusions at their usual settings (equal weights; RRF's k = 60)."""


def default_space(collection: dict, reranker: str | None = None) -> SearchSpace:
    """The space for a collection as ``GET /v1/collections/{name}`` describes it: hybrid fusion, weights and
    candidates where it has BM25 (dense and sparse alone run once each), MaxSim candidates for a multi-vector one;
    a rerank stage by ``reranker`` (or the one its defaults use) for text collections."""
    defaults = collection.get("search_defaults") or {}
    reranker = reranker or (defaults.get("rerank") or {}).get("model")
    if collection.get("modality", "text") != "text":
        reranker = None
    if collection.get("multivector"):
        return SearchSpace(modes=("multivector",), fusion=False, candidates=MULTIVECTOR_CANDIDATE_CHOICES,
                           reranker=reranker)
    if collection.get("bm25", True):
        return SearchSpace(modes=("hybrid",), fusion=True, candidates=CANDIDATE_CHOICES, reranker=reranker,
                           fixed_points=HYBRID_POINTS)
    return SearchSpace(modes=("dense",), fusion=False, candidates=(DEFAULT_CANDIDATES,), reranker=reranker)


def current_settings(collection: dict) -> SearchDefaults:
    """What a plain search of the collection runs with now, each setting given: its search defaults, and the
    built-in ones where they say nothing (the mode: multivector, else hybrid with BM25, else dense)."""
    defaults = SearchDefaults.model_validate(collection.get("search_defaults") or {})
    built_in = "multivector" if collection.get("multivector") else "hybrid" if collection.get("bm25", True) else "dense"
    mode = defaults.mode or built_in
    candidates = defaults.candidates
    if candidates is None and mode in ("hybrid", "multivector"):
        candidates = (collection.get("multivector") or {}).get("candidates", DEFAULT_CANDIDATES)
    return SearchDefaults(mode=mode, fusion=defaults.fusion or (DEFAULT_FUSION if mode == "hybrid" else None),
                          candidates=candidates, rerank=defaults.rerank)


# --- searching -----------------------------------------------------------------------


def run_queries(client, collection: str, settings: SearchDefaults | None, queries: Sequence[Query],
                k: int = CUTOFF) -> tuple[list[list[str]], list[float]]:
    """Each query searched once, one at a time: (its ids best first, its latency in seconds as the client saw it)."""
    ranked, latencies = [], []
    path = f"/v1/collections/{collection}/search"
    for query in queries:
        started = time.perf_counter()
        answer = client.request("POST", path, search_body(settings, query.text, k))
        latencies.append(time.perf_counter() - started)
        ranked.append([str(hit["id"]) for hit in answer["results"]])
    return ranked, latencies


def trial(config: dict, *, url: str, api_key: str | None, collection: str, queries: list[Query], space: SearchSpace,
          slice_size: int) -> None:
    """One Ray Tune trial: the settings of ``config`` searched with ``queries`` in slices, the scores so far
    reported after each (``queries`` is the time ASHA reads)."""
    from ray import tune

    from rayprism.client import Client

    settings = space.settings(config)
    ranked: list[list[str]] = []
    latencies: list[float] = []
    with Client(url, api_key=api_key) as client:
        for start in range(0, len(queries), slice_size):
            found, took = run_queries(client, collection, settings, queries[start : start + slice_size])
            ranked += found
            latencies += took
            tune.report(asdict(scores_of(queries[: len(ranked)], ranked, latencies)))


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float
    queries: int


@dataclass(frozen=True)
class TrialResult:
    number: int
    """The trial's place in the run, from 1."""
    settings: SearchDefaults
    scores: Scores | None
    """Its last report (None: it failed before one)."""
    complete: bool
    """Whether it searched every tuning query (the others were stopped early by ASHA, or failed)."""
    error: str | None = None
    baseline_mrr_at_10: float | None = None
    """The current settings' MRR@10 on the same queries (None: they had not searched as many when this one ended)."""
    timed: Latency | None = None
    """Its latency timed again after the search, beside the other complete trials (:func:`retime`)."""

    @property
    def p50_ms(self) -> float:
        """The p50 latency the front is drawn with: re-timed where it was, else as the trial measured it."""
        return self.timed.p50_ms if self.timed is not None else self.scores.p50_ms

    @property
    def p95_ms(self) -> float:
        return self.timed.p95_ms if self.timed is not None else self.scores.p95_ms


def pareto_front(results: Sequence[TrialResult]) -> list[TrialResult]:
    """The complete trials no other complete trial beats on both MRR@10 (higher) and p50 latency (lower, re-timed
    where it was), fastest first: each one is better than every faster one (a tie in MRR@10 keeps the faster)."""
    complete = sorted((result for result in results if result.complete and result.scores is not None),
                      key=lambda result: (result.p50_ms, -result.scores.mrr_at_10))
    front, best = [], -math.inf
    for result in complete:
        if result.scores.mrr_at_10 > best:
            front.append(result)
            best = result.scores.mrr_at_10
    return front


def choose(front: Sequence[TrialResult], max_p95_ms: float | None = None) -> TrialResult | None:
    """The best MRR@10 of the front (the fastest of equals), among those within ``max_p95_ms`` if given."""
    allowed = [result for result in front if max_p95_ms is None or result.p95_ms <= max_p95_ms]
    return max(allowed, key=lambda result: (result.scores.mrr_at_10, -result.p50_ms), default=None)


@dataclass
class TuneReport:
    collection: str
    tuning_queries: int
    held_out_queries: int
    current: SearchDefaults
    """What a plain search ran with when the run began."""
    trials: list[TrialResult] = field(default_factory=list)
    front: list[TrialResult] = field(default_factory=list)
    chosen: TrialResult | None = None
    held_out: dict[str, Scores] = field(default_factory=dict)
    """``chosen`` and ``current`` on the held-out queries (empty without held-out queries)."""
    tune_s: float = 0.0
    """Wall time of the search (Ray Tune), then of the held-out comparison."""
    held_out_s: float = 0.0
    applied: bool = False

    def to_json(self) -> dict:
        def trial_json(result: TrialResult | None) -> dict | None:
            if result is None:
                return None
            return {"number": result.number, "settings": result.settings.model_dump(mode="json", exclude_none=True),
                    "label": label(result.settings), "complete": result.complete, "error": result.error,
                    "scores": asdict(result.scores) if result.scores else None,
                    "current_mrr_at_10_same_queries": result.baseline_mrr_at_10,
                    "timed": asdict(result.timed) if result.timed else None}

        return {"collection": self.collection, "tuning_queries": self.tuning_queries,
                "held_out_queries": self.held_out_queries,
                "current": self.current.model_dump(mode="json", exclude_none=True), "current_label": label(self.current),
                "trials": [trial_json(result) for result in self.trials],
                "front": [result.number for result in self.front], "chosen": trial_json(self.chosen),
                "held_out": {name: asdict(scores) for name, scores in self.held_out.items()},
                "tune_s": self.tune_s, "held_out_s": self.held_out_s, "applied": self.applied}


# --- the run -------------------------------------------------------------------------

Progress = Callable[[TrialResult, int], None]
"""Told of each trial as it ends (stopped early, complete or failed), with the number of trials in the run."""


def search(url: str, api_key: str | None, collection: str, tuning: list[Query], *, space: SearchSpace,
           current: SearchDefaults, trials: int = DEFAULT_TRIALS, concurrency: int = DEFAULT_CONCURRENCY, seed: int = 0,
           progress: Progress | None = None, verbose: bool = False) -> list[TrialResult]:
    """Run the Ray Tune search (Ray must be running): the current settings and the space's fixed points first,
    then sampled ones, ``trials`` in all, ``concurrency`` at a time, ASHA stopping those that trail. The trials
    in the order they were made. ``verbose``: Ray Tune's own progress tables too."""
    import os

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if not verbose:  # Tune's new output engine prints its headers whatever the verbosity; the old one is silent at 0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    slice_size = max(1, math.ceil(len(tuning) / SLICES))
    points = space.points(current)[:trials]
    baseline_settings = space.settings(points[0])
    trainable = tune.with_resources(
        tune.with_parameters(trial, url=url, api_key=api_key, collection=collection, queries=tuning, space=space,
                             slice_size=slice_size),
        {"cpu": TRIAL_CPUS})
    numbers: dict[str, int] = {}
    finished: dict[str, TrialResult] = {}
    baseline: dict[int, float] = {}
    """The current settings' MRR@10 by the number of queries searched: what a trial stopped early is shown against."""

    class Reporter(tune.Callback):
        """Numbers the trials as they start, keeps the current settings' scores, and tells ``progress`` of each
        trial as it ends."""

        def on_trial_start(self, iteration, trials, trial, **info):
            numbers.setdefault(trial.trial_id, _number(trial.trial_id, len(numbers)))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if space.settings(trial.config) == baseline_settings and "queries" in result:
                baseline[result["queries"]] = result["mrr_at_10"]

        def _ended(self, trial, error: str | None) -> None:
            numbers.setdefault(trial.trial_id, _number(trial.trial_id, len(numbers)))
            result = _trial_result(numbers[trial.trial_id], space, trial.config, trial.last_result, len(tuning), error,
                                   baseline)
            finished[trial.trial_id] = result
            if progress is not None:
                progress(result, trials_total)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            try:
                error = trial.get_pickled_error()  # what the trial raised (Tune keeps it with the trial)
            except Exception:  # noqa: BLE001  (unreadable: the line still says it failed)
                error = None
            self._ended(trial, _error_line(error) if error is not None else "failed")

    trials_total = trials
    with tempfile.TemporaryDirectory(prefix="rayprism-tune-") as storage:
        tuner = tune.Tuner(
            trainable, param_space=space.param_space(),
            tune_config=tune.TuneConfig(
                metric="mrr_at_10", mode="max", num_samples=trials, max_concurrent_trials=concurrency,
                reuse_actors=True, search_alg=BasicVariantGenerator(points_to_evaluate=points, random_state=seed),
                scheduler=ASHAScheduler(time_attr="queries", max_t=len(tuning), grace_period=slice_size,
                                        reduction_factor=REDUCTION_FACTOR)),
            run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=2 if verbose else 0,
                                      callbacks=[Reporter()], failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
    return sorted(finished.values(), key=lambda result: result.number)


def _number(trial_id: str, started: int) -> int:
    """A trial's place in the run, from 1: the counter Ray Tune's random search ends its trial ids with (the order
    the trials were made in: the current settings first), else the order they started in."""
    suffix = trial_id.rsplit("_", 1)[-1]
    return int(suffix) + 1 if suffix.isdigit() else started + 1


def _error_line(error: BaseException) -> str:
    """A failed trial's error in one line: the service's message where it answered one."""
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = getattr(cause, "message", None) or str(cause)
    return " ".join(text.split())[-300:]


def _trial_result(number: int, space: SearchSpace, config: dict, last: dict | None, total: int,
                  error: str | None, baseline: dict[int, float]) -> TrialResult:
    scores = Scores(**{name: last[name] for name in Scores.__dataclass_fields__}) if last and "queries" in last else None
    return TrialResult(number=number, settings=space.settings(config), scores=scores,
                       complete=error is None and scores is not None and scores.queries >= total, error=error,
                       baseline_mrr_at_10=baseline.get(scores.queries) if scores is not None else None)


def retime(client, collection: str, results: Sequence[TrialResult], queries: Sequence[Query]) -> list[TrialResult]:
    """``results`` with each complete trial's latency timed again on ``queries``: query by query, every complete
    trial's settings in turn (who goes first rotating), one search at a time."""
    complete = [result for result in results if result.complete]
    took: dict[int, list[float]] = {result.number: [] for result in complete}
    for index, query in enumerate(queries):
        first = index % len(complete) if complete else 0
        for result in complete[first:] + complete[:first]:
            took[result.number] += run_queries(client, collection, result.settings, [query])[1]
    timed = []
    for result in results:
        if result.number in took and took[result.number]:
            latencies_ms = np.asarray(took[result.number]) * 1e3
            result = replace(result, timed=Latency(float(np.percentile(latencies_ms, 50)),
                                                   float(np.percentile(latencies_ms, 95)), len(queries)))
        timed.append(result)
    return timed


def compare(client, collection: str, chosen: SearchDefaults, queries: Sequence[Query]) -> dict[str, Scores]:
    """``chosen`` and the collection's current defaults (a plain search) on ``queries``, one search at a time,
    the two interleaved query by query so both meet the same machine: {"chosen": ..., "current": ...}."""
    ranked: dict[str, list] = {"chosen": [], "current": []}
    latencies: dict[str, list] = {"chosen": [], "current": []}
    for query in queries:
        for name, settings in (("chosen", chosen), ("current", None)):
            found, took = run_queries(client, collection, settings, [query])
            ranked[name] += found
            latencies[name] += took
    return {name: scores_of(queries, ranked[name], latencies[name]) for name in ranked}


# --- the picture ---------------------------------------------------------------------


def plot(report: TuneReport, path: str, *, title: str | None = None) -> None:
    """The complete trials as MRR@10 against p50 latency (re-timed), the Pareto front joined, the choice starred,
    and on the held-out queries the choice against the current defaults."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("--plot draws with matplotlib: pip install 'rayprism[tune]'") from error

    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    complete = [result for result in report.trials if result.complete]
    axes.scatter([r.p50_ms for r in complete], [r.scores.mrr_at_10 for r in complete], color="0.55",
                 label=f"trials that searched every tuning query ({report.tuning_queries})")
    if report.front:
        axes.plot([r.p50_ms for r in report.front], [r.scores.mrr_at_10 for r in report.front], "-o",
                  color="tab:blue", label="Pareto front")
        for result in report.front:
            axes.annotate(label(result.settings), (result.p50_ms, result.scores.mrr_at_10), fontsize=6,
                          xytext=(4, -8), textcoords="offset points")
    if report.chosen is not None:
        axes.scatter([report.chosen.p50_ms], [report.chosen.scores.mrr_at_10], marker="*", s=220,
                     color="tab:orange", zorder=5, label="chosen (on the tuning queries)")
    for name, marker, color in (("chosen", "*", "tab:red"), ("current", "X", "tab:green")):
        scores = report.held_out.get(name)
        if scores is not None:
            axes.scatter([scores.p50_ms], [scores.mrr_at_10], marker=marker, s=160, color=color, zorder=6,
                         label=f"{name} on the {report.held_out_queries} held-out queries")
    axes.set_xlabel("p50 latency, ms (one search at a time)")
    axes.set_ylabel("MRR@10")
    stopped = len(report.trials) - len(complete)
    axes.set_title(title or f"rayprism tune {report.collection}: {len(report.trials)} trials, {stopped} stopped early "
                   "by ASHA (not shown)", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


Verdict = Literal["better", "not better", "unchecked"]


def verdict(report: TuneReport) -> Verdict:
    """Whether the choice scored above the current defaults on the held-out queries."""
    if not report.held_out:
        return "unchecked"
    return "better" if report.held_out["chosen"].mrr_at_10 > report.held_out["current"].mrr_at_10 else "not better"
