"""Loading a Milvus server from a batch job: the job's one sink actor against every encoder actor writing its own rows.

    python bench/parallel_load.py [--rows 200000] [--rows-per-part 2000] [--actors 2] [--cpus-per-actor 1]

In one run, on the test suite's embedded Milvus 2.3.5 server and a local Ray: the same job (``--rows`` rows,
``--actors`` encoder actors, the tiny 16-dimension test model so that encoding is not what is measured) loads a
fresh dense collection twice, ``output.writers: sink`` (every row through one sink actor: 1 writer) then
``writers: workers`` (each actor writes its own: ``--actors`` writers). Each is timed end to end by the job itself
(collection settled, actors started, rows embedded and written, one flush, the count), and over its loading alone:
the rows of every unit but the first reported, over the time from the first report to the last (actor and model
start-up left out). Each is checked: the count equals the rows, and the distinct writer processes that the units'
done records name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test suite's server and tiny model
SAMPLE = REPO / "tests" / "data" / "debian-sample.jsonl"


def write_corpus(path: Path, rows: int) -> None:
    """``rows`` rows: the test sample's texts over and over, each copy under ids of its own."""
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    with path.open("w") as out:
        for row in range(rows):
            out.write(json.dumps({"id": f"r{row}", "text": texts[row % len(texts)]}) + "\n")


def load(work: Path, corpus: Path, model: Path, uri: str, writers: str, args) -> dict:
    from rayprism.jobs.embed import execute, plan
    from rayprism.platform.config import JobConfig

    state = work / f"state-{writers}"
    job = JobConfig.model_validate({
        "input": {"path": str(corpus)},
        "model": {"name": "tiny", "source": str(model)},
        "compute": {"num_cpus": args.cpus_per_actor, "torch_threads": 1, "min_actors": args.actors,
                    "max_actors": args.actors, "rows_per_part": args.rows_per_part, "batch_size": 256},
        "output": {"collection": {"name": f"load_{writers}", "model": "tiny", "bm25": False}, "uri": uri,
                   "writers": writers, "state_dir": str(state)},
    })
    reports: list[tuple[float, int]] = []  # (when, rows) of each unit, as the job hears of it
    summary = execute(plan(job), on_unit=lambda report: reports.append((time.perf_counter(), report.rows)))
    records = [json.loads(path.read_text()) for path in (state / "_done").glob("*.json")]
    (first, _), *rest = reports
    return {"rows": summary.rows, "seconds": summary.seconds, "rows_per_s": summary.rows_per_s,
            "loading_rows_per_s": sum(rows for _, rows in rest) / (rest[-1][0] - first),
            "count": summary.collection_count,
            "worker_writers": len({record["writer"]["pid"] for record in records if "writer" in record})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rows-per-part", type=int, default=2000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus-per-actor", type=float, default=1)
    args = parser.parse_args()

    import ray.data

    from rayprism.jobs.embed import connect
    from tests.conftest import make_tiny_model
    from tests.milvus_server import milvus_server

    with tempfile.TemporaryDirectory() as directory, milvus_server(Path(directory) / "milvus") as uri:
        work = Path(directory)
        corpus = work / "corpus.jsonl"
        write_corpus(corpus, args.rows)
        model = make_tiny_model(work / "tiny")
        connect()
        ray.data.DataContext.get_current().wait_for_min_actors_s = 300  # every actor up before the first unit
        results = {writers: load(work, corpus, model, uri, writers, args) for writers in ("sink", "workers")}
        ray.shutdown()
    baseline = results["sink"]
    print(f"Milvus 2.3.5 embedded server, {args.rows} rows of {args.rows_per_part} per unit, {args.actors} encoder "
          f"actors x {args.cpus_per_actor} CPU, tiny model (16 dims)")
    print(f"{'writers':<28}{'end to end s':>13}{'rows/s':>9}{'ratio':>7}{'loading rows/s':>16}{'ratio':>7}"
          f"{'count':>9}{'writer pids':>13}")
    for writers, label in (("sink", "1: the sink actor"), ("workers", f"{args.actors}: each encoder actor")):
        result = results[writers]
        print(f"{label:<28}{result['seconds']:>13.1f}{result['rows_per_s']:>9.0f}"
              f"{result['rows_per_s'] / baseline['rows_per_s']:>7.2f}{result['loading_rows_per_s']:>16.0f}"
              f"{result['loading_rows_per_s'] / baseline['loading_rows_per_s']:>7.2f}"
              f"{result['count']:>9}{result['worker_writers']:>13}")


if __name__ == "__main__":
    main()
