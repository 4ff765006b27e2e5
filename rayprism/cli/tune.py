"""``rayprism tune``: search a collection's search settings with Ray Tune, and keep the best as its defaults."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from rayprism.cli.common import API_KEY_OPTION, URL_OPTION, VERBOSE_OPTION, app, fail, service_client
from rayprism.cli.reembed import read_queries
from rayprism.jobs.tune import DEFAULT_CONCURRENCY, DEFAULT_HOLDOUT, DEFAULT_TRIALS
from rayprism.platform.constants import API_KEY_VARIABLE

if TYPE_CHECKING:
    from rayprism.jobs.tune import Scores, TrialResult, TuneReport

TUNE_HELP = """Find the search settings that rank a collection's relevant documents best, with Ray Tune.

QUERIES is JSONL of {query, relevant: list of ids} (or doc_id), as `rayprism reembed --queries` reads.
A share of them (--holdout) is kept aside; the rest are the tuning queries. Each trial is one set of
settings: mode, hybrid fusion (weighted on min-max or z-scores with its dense/sparse weights, or RRF
with its k), candidates per route, and a rerank stage with --rerank MODEL. A trial searches the
running service through the SDK with every tuning query, one at a time, and is scored on MRR@10 and
Recall@10 and on its searches' p50/p95 latency. Trials run in parallel on Ray (a local one, or the
cluster --address names); ASHA stops those that trail the others after 1/8 and 3/8 of the queries.
The current settings run first, then dense and BM25 alone and z-score and RRF fusion at their usual
settings; the rest are sampled.

Printed: each trial as it ends, then the Pareto front of the complete trials (MRR@10 against p50
latency), the choice (the front's best MRR@10, within --max-p95-ms if given), and the choice against
the collection's current defaults on the held-out queries, searched one at a time. --apply keeps the
choice as the collection's search defaults (PUT /v1/collections/NAME/search_defaults; a search still
overrides each setting), unless it scored below the current defaults on the held-out queries.

Latencies printed as trials end are measured under the load of --concurrency trials searching at
once; those of the front are timed again afterwards, one search at a time, every complete trial's
settings in turn on the same queries."""


def _scores_line(scores: Scores) -> str:
    return (f"MRR@10 {scores.mrr_at_10:.3f}  R@10 {scores.recall_at_10:.3f}  p50 {scores.p50_ms:6.1f} ms  "
            f"p95 {scores.p95_ms:6.1f} ms")


def _trial_line(result: TrialResult, total: int, tuning: int) -> str:
    """A trial as it ends: its scores on the queries it searched (all of them, or the first ones when ASHA stopped
    it), and the current settings' MRR@10 on those same queries where known."""
    from rayprism.jobs.tune import label

    head = f"[{result.number:>3}/{total}] "
    if result.scores is None:
        return f"{head}failed: {result.error}  ({label(result.settings)})"
    if result.complete:
        how = f"all {tuning} queries"
    else:
        how = f"{'failed' if result.error else 'stopped'} at {result.scores.queries}"
        if result.baseline_mrr_at_10 is not None:
            how += f" (current {result.baseline_mrr_at_10:.3f})"
    return f"{head}{_scores_line(result.scores)}  {how:<28}  {label(result.settings)}"


def _front_table(report: TuneReport) -> list[str]:
    from rayprism.jobs.tune import label

    lines = ["| trial | MRR@10 | R@10 | p50 ms | p95 ms | settings |", "|---|---|---|---|---|---|"]
    for result in report.front:
        chosen = " (chosen)" if report.chosen is not None and result.number == report.chosen.number else ""
        scores = result.scores
        lines.append(f"| {result.number}{chosen} | {scores.mrr_at_10:.3f} | {scores.recall_at_10:.3f} | "
                     f"{result.p50_ms:.1f} | {result.p95_ms:.1f} | {label(result.settings)} |")
    return lines


@app.command(help=TUNE_HELP)
def tune(
    collection: str = typer.Argument(..., help="The collection (or alias) to tune."),
    queries: Path = typer.Option(..., exists=True, dir_okay=False,
                                 help="JSONL of {query, relevant: list of ids} (or doc_id)."),
    trials: int = typer.Option(DEFAULT_TRIALS, min=1, help="Settings tried (the current ones, dense and BM25 alone included)."),
    holdout: float = typer.Option(DEFAULT_HOLDOUT, min=0, max=0.95,
                                  help="Share of the queries kept out of the search, to score its choice on (0: none)."),
    concurrency: int = typer.Option(DEFAULT_CONCURRENCY, min=1, help="Trials searching at once (each one search at a time)."),
    rerank: Optional[str] = typer.Option(None, "--rerank", metavar="MODEL",
                                         help="Also try a rerank stage by this served reranker (slower searches)."),
    max_p95_ms: Optional[float] = typer.Option(None, min=0, help="Choose among settings whose p95 latency in the "
                                               "trials is at most this (ms). Default: the best MRR@10, however slow."),
    seed: int = typer.Option(0, help="Seeds the query split and the sampled settings."),
    apply: bool = typer.Option(False, "--apply", help="Keep the choice as the collection's search defaults."),
    plot: Optional[Path] = typer.Option(None, dir_okay=False, help="Draw the trials and the front into this PNG."),
    report: Optional[Path] = typer.Option(None, dir_okay=False, help="Write every trial and score here, as JSON."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to run the trials on. Default: $RAY_ADDRESS, "
                                          "else a local Ray."),
    url: Optional[str] = URL_OPTION,
    api_key: Optional[str] = API_KEY_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    from rayprism.jobs import tune as tuning
    from rayprism.platform.ray_runtime import start_ray

    try:
        split = tuning.split_queries(tuning.queries_of(read_queries(queries)), holdout, seed)
    except ValueError as error:
        fail(str(error))
    tune_on, held_out = split
    with service_client(url, api_key) as client:
        described = client.collection(collection)
        if not described.get("count"):
            fail(f"collection {collection!r} has no documents to tune on")
        space = tuning.default_space(described, rerank)
        current = tuning.current_settings(described)
        result = tuning.TuneReport(collection=collection, tuning_queries=len(tune_on), held_out_queries=len(held_out),
                                   current=current)
        typer.echo(f"tuning {collection!r} ({described['count']} documents): {trials} trials, {concurrency} at a time, "
                   f"on {len(tune_on)} queries ({len(held_out)} held out); now: {tuning.label(current)}")
        start_ray(address, verbose=verbose)
        started = time.perf_counter()
        key = api_key or os.environ.get(API_KEY_VARIABLE)
        result.trials = tuning.search(
            client.url, key, collection, tune_on, space=space, current=current, trials=trials,
            concurrency=concurrency, seed=seed, verbose=verbose,
            progress=lambda trial, total: typer.echo(_trial_line(trial, total, len(tune_on))))
        result.tune_s = time.perf_counter() - started
        complete = sum(trial.complete for trial in result.trials)
        timed_on = tune_on[: tuning.RETIME_QUERIES]
        typer.echo(f"\n{len(result.trials)} trials in {result.tune_s:.0f} s, {complete} on every tuning query; timing "
                   f"those again on {len(timed_on)} queries, one search at a time, all in turn ...")
        result.trials = tuning.retime(client, collection, result.trials, timed_on)
        result.front = tuning.pareto_front(result.trials)
        result.chosen = tuning.choose(result.front, max_p95_ms)
        typer.echo("the Pareto front (MRR@10 on every tuning query against p50 latency, one search at a time):")
        typer.echo("\n".join(_front_table(result)))
        if result.chosen is None:
            _finish(result, plot, report)
            fail("no complete trial" + (f" within p95 {max_p95_ms:g} ms" if max_p95_ms is not None else ""), code=1)
        typer.echo(f"\nchosen: trial {result.chosen.number}, {tuning.label(result.chosen.settings)}")
        if held_out:
            started = time.perf_counter()
            result.held_out = tuning.compare(client, collection, result.chosen.settings, held_out)
            result.held_out_s = time.perf_counter() - started
            typer.echo(f"on the {len(held_out)} held-out queries, one search at a time:")
            typer.echo(f"  chosen   {_scores_line(result.held_out['chosen'])}")
            typer.echo(f"  current  {_scores_line(result.held_out['current'])}  ({tuning.label(current)})")
        worse = bool(result.held_out) and result.held_out["chosen"].mrr_at_10 < result.held_out["current"].mrr_at_10
        if apply and not worse:
            client.set_search_defaults(collection, **result.chosen.settings.model_dump(exclude_none=True))
            result.applied = True
            typer.echo(f"applied: {collection!r} searches with {tuning.label(result.chosen.settings)} unless a "
                       "search says otherwise")
        _finish(result, plot, report)
        if apply and not result.applied:
            fail("not applied: the choice scored below the current defaults on the held-out queries", code=1)


def _finish(result: TuneReport, plot: Optional[Path], report: Optional[Path]) -> None:
    from rayprism.jobs import tune as tuning

    if plot is not None:
        try:
            tuning.plot(result, str(plot))
        except ImportError as error:
            fail(str(error))
        typer.echo(f"plot: {plot}")
    if report is not None:
        report.write_text(json.dumps(result.to_json(), indent=2))
        typer.echo(f"report: {report}")
