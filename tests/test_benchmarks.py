"""Benchmarks: the statistics, ratios, memory figures and reports they rest on, one tiny
benchmark on synthetic vectors, and (slow) a real quick run of the command."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common, retrieval, run as bench_run, training
from benchmarks.common import BenchResult, Table


def test_percentiles_interpolate_and_stats_summarise():
    assert common.percentile([3, 1, 2], 50) == 2
    assert common.percentile([0, 10], 95) == pytest.approx(9.5)
    assert common.percentile([], 50) is None
    s = common.stats([1, 2, 3, 4])
    assert s["n"] == 4 and s["median"] == 2.5 and s["min"] == 1 and s["max"] == 4 and s["mean"] == 2.5
    assert common.stats([])["median"] is None


def test_ratios_survive_missing_figures():
    assert common.ratio(3, 2) == 1.5
    assert common.ratio(None, 2) is None and common.ratio(1, 0) is None
    assert common.fmt_ratio(1.5) == "1.50x" and common.fmt_ratio(None) == "n/a"
    assert common.fmt(None) == "-" and common.fmt(12345) == "12,345" and common.fmt(0.012345) == "0.0123"


def test_report_writes_every_number_to_json_and_tables_to_markdown(tmp_path):
    a = BenchResult("retrieval", summary="HNSW 8.00x exact", metrics={"qps": {"exact": 100.0, "hnsw": 800.0}},
                    tables=[Table("speed", ["index", "q/s"], [["exact", 100.0], ["hnsw", 800.0]])],
                    notes=["HNSW is slower to build"], wall_s=12.0, memory={"peak_tree_rss_mb": 2048.0})
    b = common.not_available("training", "training/grpo.py does not exist yet")
    meta = {"date": "2025-01-01", "quick": True, "machine": {"hostname": "box", "cores": 2}, "wall_s": 20.0}
    json_path, md_path = common.write_report([a, b], tmp_path, meta, "results-quick")
    data = json.loads(json_path.read_text())
    assert data["meta"]["machine"]["hostname"] == "box"
    assert data["benchmarks"]["retrieval"]["metrics"]["qps"]["hnsw"] == 800.0
    assert data["benchmarks"]["training"]["status"] == "not available"
    assert BenchResult.from_dict(data["benchmarks"]["retrieval"]).tables[0].rows == [["exact", 100.0], ["hnsw", 800.0]]
    md = md_path.read_text()
    assert "| hnsw | 800 |" in md and "HNSW is slower to build" in md and "quick run" in md
    assert a.line() == "retrieval: HNSW 8.00x exact [peak RSS 2.0 GB, 12 s]"
    assert "not available: training/grpo.py does not exist yet" in md


def test_generation_and_agent_share_a_process_and_unknown_names_are_refused():
    assert bench_run.groups(["agent", "retrieval", "generation"]) == [["retrieval"], ["generation", "agent"]]
    assert bench_run.groups(["agent"]) == [["agent"]]
    assert bench_run.parse_only(None) == list(bench_run.BENCHMARKS)
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench_run.parse_only("retrieval,speed")


def test_memory_sampler_sees_an_allocation():
    with common.RssSampler(interval=0.05) as sampler:
        start = common.rss_mb()
        block = np.ones(200 * common.MB // 8)  # 200 MB, touched
        import time

        time.sleep(0.3)
        assert block.sum() > 0
    assert sampler.peak_mb >= start + 150


def test_subprocess_memory_and_exit_code_are_reported(tmp_path):
    code = "import numpy as np, time; a = np.ones(150 * 2**20 // 8); time.sleep(0.5); raise SystemExit(3)"
    out = training.run_subprocess([sys.executable, "-c", code], dict(os.environ), tmp_path, tmp_path / "log", 60)
    assert out["returncode"] == 3 and not out["timed_out"]
    assert out["maxrss_mb"] >= 140 and out["peak_tree_rss_mb"] >= 100


def test_clustered_vectors_are_unit_length_and_recall_counts_overlap():
    base, queries = retrieval.clustered_vectors(500, n_queries=8, dim=32)
    assert base.shape == (500, 32) and queries.shape == (8, 32) and base.dtype == np.float32
    assert np.allclose(np.linalg.norm(base, axis=1), 1, atol=1e-5)
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert retrieval.recall_at_k(exact, exact) == 1.0
    assert retrieval.recall_at_k(np.array([[1, 2, 9, 9], [8, 7, 6, 5]]), exact) == pytest.approx(0.75)


def test_tiny_exact_vs_hnsw_benchmark_and_its_build_cache(tmp_path):
    import faiss

    faiss.omp_set_num_threads(1)
    first = retrieval.synthetic(2000, repeats=1, cache=tmp_path)
    assert first["n"] == 2000 and 0.9 <= first["recall_at_10"] <= 1.0  # HNSW on 2,000 vectors is near exact
    for name in ("exact", "hnsw"):
        assert first[name]["batch_qps"] > 0 and first[name]["latency_ms"]["median"] > 0
    assert not first["hnsw"]["cached"]
    assert set(first["ef_search_sweep"]) == set(retrieval.EF_SWEEP) | {first["hnsw_params"]["efSearch"]}
    again = retrieval.synthetic(2000, repeats=1, cache=tmp_path)
    assert again["hnsw"]["cached"] and again["hnsw"]["build_s"] == first["hnsw"]["build_s"]
    assert again["recall_at_10"] == first["recall_at_10"]  # the same index, the same data


@pytest.mark.slow
def test_quick_embedding_benchmark_runs_and_reports(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "embedding", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = [l for l in proc.stdout.splitlines() if l.startswith("embedding: ")]
    assert summary and "passages/s" in summary[-1]
    data = json.loads((tmp_path / "results-quick.json").read_text())
    emb = data["benchmarks"]["embedding"]
    assert emb["status"] == "ok" and emb["memory"]["peak_tree_rss_mb"] > 100
    assert all(r["passages_per_s"] > 0 for r in emb["metrics"]["encoding"]["runs"].values())
    assert (tmp_path / "results-quick.md").read_text().count("|") > 10


def test_synthetic_embeddings_are_unit_deterministic_and_independent_of_chunking(monkeypatch):
    from benchmarks import index_memory

    monkeypatch.setattr(index_memory, "CHUNK", 1000)
    data = index_memory.SyntheticEmbeddings(3500, dim=32, seed=3)
    whole = data[0:3500]
    assert whole.shape == (3500, 32) and whole.dtype == np.float32
    assert np.allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)
    assert np.array_equal(np.concatenate([data[0:1700], data[1700:3500]]), whole)  # any slicing, the same rows
    queries = index_memory.SyntheticEmbeddings.queries(data, 20)[0:20]
    assert not np.isin(queries, whole).all(axis=1).any()  # held out: another random stream
    exact = index_memory.exact_top_k(whole, queries, k=5)
    assert np.array_equal(exact, np.argsort(-(queries @ whole.T), axis=1, kind="stable")[:, :5])


def test_tiny_index_memory_benchmark_reports_every_type(monkeypatch, tmp_path):
    from benchmarks import index_memory

    monkeypatch.setattr(index_memory, "DIM", 48)  # 8 PQ sub-quantizers: trains in about a second
    result = index_memory.run(quick=True, ctx={"index_sizes": [10_500], "calibration": False, "scratch_dir": tmp_path})
    rows = {r["type"]: r for r in result.metrics["rows"]}
    assert set(rows) == {"flat", "hnsw", "ivfpq"}
    assert rows["flat"]["recall_at_10"] == 1.0 and rows["flat"]["bytes_per_vector"] >= 48 * 4
    # 48-d here (the benchmark's own figures are at 384-d): a check of the pipeline, not of recall.
    assert rows["ivfpq"]["kind"] == "ivfpq" and rows["ivfpq"]["recall_at_10"] >= 0.7
    assert max(s["recall_at_10"] for s in rows["ivfpq"]["sweep"]) >= 0.95
    assert rows["ivfpq"]["bytes_per_vector"] < rows["flat"]["bytes_per_vector"] / 2
    assert rows["ivfpq"]["sweep"] and all(r["latency_ms"]["median"] > 0 for r in rows.values())
    assert list(tmp_path.iterdir()) == []  # the vector files are deleted
    assert "IVF-PQ at 10,500" in result.summary and len(result.tables[0].rows) == 3
