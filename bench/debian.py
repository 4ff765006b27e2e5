"""The Debian retrieval set as the benchmarks read and score it: one definition for bench/retrieval.py,
bench/reembed.py and bench/clients.py. The set and its metrics: ../shared/data/debian/README.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "debian"
FIELDS = {"package": "varchar", "section": "varchar", "priority": "varchar", "installed_size": "int64"}
"""The corpus's keys besides ``id`` and ``text``, as collection fields."""


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as lines:
        return [json.loads(line) for line in lines]


def scores(ranked: list[list[str]], targets: list[str]) -> tuple[float, float, float]:
    """MRR@10, Recall@1 and Recall@10 of ranked ids against each query's one relevant id."""
    mrr = r1 = r10 = 0.0
    for ids, target in zip(ranked, targets):
        if target in ids[:10]:
            rank = ids.index(target) + 1
            mrr += 1 / rank
            r1 += rank == 1
            r10 += 1
    n = len(targets)
    return mrr / n, r1 / n, r10 / n


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q) * 1e3)
