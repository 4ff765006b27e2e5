"""bench/capacity_model.py's sizing arithmetic against numbers worked out by hand from a small measurement."""

from __future__ import annotations

import pytest

from bench.capacity_model import (
    BEGIN,
    END,
    Assumptions,
    StoreCpu,
    lite_ceiling,
    memory_table,
    plan_server,
    store_cpu_s,
    write_report,
)


def tier(memory_per_row: float, search_fixed: float, search_per_row: float) -> dict:
    return {"memory_bytes": {"fixed": 5e6, "per_row": memory_per_row},
            "search_cpu_s": {"fixed": search_fixed, "per_row": search_per_row}}


MEASURED = {
    "measured": "2026-01-01 00:00", "cpu_count": 2, "load_average_start": [1.0, 1.0, 1.0],
    "load_average_end": [2.0, 2.0, 2.0],
    "embedding": {"query": {"cpu_s_per_query": 0.005, "tokens_per_query": 10.0, "cpu_s_per_token": 0.0005},
                  "document": {"cpu_s_per_token": 0.0002, "tokens_per_document": 80.0}},
    "rerank": {"cpu_s_per_pair": 0.01, "tokens_per_pair": 100.0},
    "fusion": {"cpu_s_per_call": 0.0001, "candidates": 100},
    "rescore_fetch_lite": {"fixed": 0.0, "per_row": 0.0, "points": [[10_000, 0.0012], [40_000, 0.0008]]},  # mean 0.001
    "tiers": {"float32": tier(1600, 0.0002, 1e-9), "int8": tier(400, 0.0002, 5e-10), "binary": tier(100, 0.0002, 1e-10),
              "fde": tier(110_000, 0.004, 2e-8), "bm25": tier(900, 0.0003, 0.0)},
}
SMALL = Assumptions(gpu_query_embeddings_per_s=1000, gpu_rerank_pairs_per_s=1000, node_cpus=8, node_gpus=2,
                    utilisation=0.5, serve_cpu_s_per_request=0.001, rerank_pairs=10, memory_headroom=1.25)


def test_a_search_costs_its_tiers_line_plus_the_rescoring_fetch_of_a_compressed_tier():
    assert store_cpu_s(MEASURED, "float32", 1e6) == pytest.approx(0.0002 + 0.001)
    assert store_cpu_s(MEASURED, "binary", 1e6) == pytest.approx(0.0002 + 0.0001 + 0.001)
    assert store_cpu_s(MEASURED, "bm25", 5e7) == pytest.approx(0.0003)
    # one Lite process answers dense + BM25 + fusion for each search: 1 / (0.0012 + 0.0003 + 0.0001)
    assert lite_ceiling(MEASURED, "float32", 1e6) == pytest.approx(625)


def test_a_plan_counts_gpus_cores_replicas_and_nodes():
    store = StoreCpu(one=0.002, several=0.003)
    small = plan_server(MEASURED, store, qps=200, assumptions=SMALL)
    assert small.store_cores == pytest.approx(0.8)  # 200 × 0.002 / 0.5: one replica, charged one replica's CPU
    assert small.store_replicas == 1
    plan = plan_server(MEASURED, store, qps=1000, assumptions=SMALL)
    assert plan.gpus_query == 2  # 1000 / (1000 × 0.5)
    assert plan.serving_cores == pytest.approx(1000 * (0.001 + 0.0001) / 0.5)  # 2.2
    assert plan.store_cores == pytest.approx(6.0)  # past one replica: 1000 × 0.003 / 0.5
    assert plan.store_replicas == 6
    assert plan.nodes == 2  # 2 GPUs fit one node; 8.2 cores do not fit its 8
    assert plan.one_store_process_ceiling == pytest.approx(500)
    bigger = plan_server(MEASURED, store, 2000, SMALL)
    assert (bigger.gpus_query, bigger.store_replicas, bigger.nodes) == (4, 12, 3)  # 16.4 cores: 3 nodes of 8
    reranked = plan_server(MEASURED, store, 1000, SMALL, rerank=True)
    assert reranked.gpus_rerank == 20  # 1000 × 10 pairs / (1000 × 0.5)
    assert reranked.nodes == 11  # 22 GPUs, 2 a node


def test_memory_for_n_documents_is_the_fitted_slope_times_n_times_the_headroom():
    lines = memory_table(MEASURED, SMALL).splitlines()
    float32 = next(line for line in lines if line.startswith("| float32"))
    # 1600 B × 1M × 1.25 = 1.86 GiB; × 10M = 18.6 → "19"; × 50M = 93.1 → "93"
    assert float32.split(" | ")[1:] == ["1,600", "1.86", "19", "93 |"]


def test_the_report_replaces_only_its_generated_part_and_checks_the_1m_run(tmp_path):
    page = tmp_path / "capacity.md"
    page.write_text(f"# Capacity\n\nWritten by hand.\n\n{BEGIN}\nold tables\n{END}\n\nAlso by hand.\n")
    check = {"float32": {"restart": {"rows": 1_000_000, "rss_delta_bytes": 1600e6 * 1.1, "search_cpu_s": 0.0012 * 1.25,
                                     "search_p50_ms": 3.0, "search_p99_ms": 9.0, "open_s": 10.0, "mirror_build_s": 100.0,
                                     "restart_s": 110.0 * 1.05, "restart_cpu_s": 90.0},
                         "restart_points": [{"rows": 100_000, "restart_s": 15.0, "restart_cpu_s": 12.0, "open_s": 1.0,
                                             "mirror_build_s": 14.0, "iterator_page_s": 0.5}],
                         "restart_fit": {"restart_s": {"fixed": 5.0, "per_row": 1e-4}}}}  # 105 s at 1M rows
    check["fill"] = {"binary": {"rows": 1_000_000, "rss_bytes": 100e6 * 0.9, "search_cpu_s": 0.0003 * 1.5}}
    replicas = {"runs": {"1": {"store_cpu_s_per_search": 0.002}, "2": {"store_cpu_s_per_search": 0.003}}}
    write_report(tmp_path, MEASURED, check, replicas, SMALL)
    text = page.read_text()
    assert text.startswith("# Capacity\n\nWritten by hand.") and text.endswith("Also by hand.\n")
    assert "old tables" not in text
    assert "(1.10)" in text and "(1.25)" in text  # measured ÷ predicted, memory and CPU per search
    assert "| 95 / 86 (0.90) | 0.300 / 0.450 (1.50) |" in text  # the binary mirror filled at 1M: 100 MB, 0.3 ms
    assert "105 / 116 (1.10)" in text  # restart: 5 s + 1M × 0.1 ms predicted, 115.5 s measured
    assert "| float32 mirror (384-d) | 100,000 | 15 | 12 | 0.120 | 1 + 14 | 0.50 / — |" in text  # 15 s for 100k rows
    assert "**500 searches/s**" in text  # the one-process ceiling, 1 / 0.002
    assert "each search cost 3.00 ms summed" in text
    assert "| `utilisation` | 0.5 |" in text
    for image in ("capacity-memory.png", "capacity-search.png", "capacity-nodes.png"):
        assert (tmp_path / image).stat().st_size > 1000
