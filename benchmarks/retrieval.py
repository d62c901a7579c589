"""Retrieval speed: exact vs HNSW search, and one query over the 12 language indexes.

Part 1 (synthetic): clustered random unit vectors of one language at 10^4, 10^5 and (full
run, memory allowing) 10^6, indexed by the project's own `store.make_index` ("flat" =
`IndexFlatIP`, "hnsw" = `IndexHNSWFlat` with the store's M / efConstruction / efSearch).
Reported: build time, recall@10 of HNSW against exact search, latency of one query, and
queries/s for a batch of 64. Clustered data (not uniform noise) so that nearest neighbours
exist and recall means something.

Part 2 (real): the `xquad-partial` collection's 12 indexes, searched the way the retriever
does (top 50 per language): one index after another, or a thread pool over the indexes,
with 1 or 2 faiss OpenMP threads; and a batch of 64 queries as one faiss call per index vs
one query at a time.

Part 3 (spread): one question (real text, embedded) searched over the collection's 12
languages: in-process, through one retrieval service holding every language, and through
three services holding 4 languages each (`SpreadRetriever`, fusion on the client), each
service its own process on loopback; then the three with one of them stopped.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import BenchResult, Table, fmt_ratio, ratio, rss_mb, stats, timed

DIM = 384
K = 10
BATCH = 64
SPREAD = 0.8        # noise norm relative to the centre: cosine to the centre about 0.78
EF_SWEEP = (16, 32, 64)  # HNSW efSearch values tried besides the store's own (search-time only)
DATA_VERSION = 2    # part of the cache key: bump when clustered_vectors changes


def clustered_vectors(n: int, n_queries: int = BATCH, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` base and `n_queries` query unit vectors (float32) drawn around sqrt(n) shared random
    centres (clusters grow with n, so the search gets harder as the collection grows)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, int(np.sqrt(n))), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 65536):  # in chunks: 10^6 x 384 is 1.5 GB already
            m = min(65536, count - start)
            pts = centres[rng.integers(0, len(centres), m)]
            pts += rng.standard_normal((m, dim), dtype=np.float32) * (SPREAD / np.sqrt(dim))
            pts /= np.linalg.norm(pts, axis=1, keepdims=True)
            out[start:start + m] = pts
        return out

    return draw(n), draw(n_queries)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each exact top-k that the approximate top-k also found."""
    k = exact.shape[1]
    return float(np.mean([len(set(a[a >= 0]) & set(e[e >= 0])) / k for a, e in zip(approx, exact)]))


def _single_query_latencies(indexes: dict, queries: np.ndarray, k: int) -> dict[str, list[float]]:
    """Per index, the seconds of each one-query search, the indexes interleaved query by query."""
    out = {name: [] for name in indexes}
    for i in range(len(queries)):
        for name, index in indexes.items():
            out[name].append(timed(index.search, queries[i:i + 1], k)[0])
    return out


def _batch_times(indexes: dict, queries: np.ndarray, k: int, repeats: int) -> dict[str, list[float]]:
    out = {name: [] for name in indexes}
    for _ in range(repeats):
        for name, index in indexes.items():
            out[name].append(timed(index.search, queries, k)[0])
    return out


def _hnsw_index(base: np.ndarray, n: int, seed: int, cache: Path | None):
    """The store's HNSW index over `base` and its build time; from `cache` when it holds one
    built from the same data and parameters (a 10^6 build takes most of an hour on a shared
    2-core machine), else built now (and saved there)."""
    import faiss

    from crosearch_agent.store import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, make_index

    key = f"hnsw-n{n}-seed{seed}-d{DIM}-M{HNSW_M}-efc{HNSW_EF_CONSTRUCTION}-data{DATA_VERSION}-faiss{faiss.__version__}"
    if cache is not None and (cache / f"{key}.json").exists() and (cache / f"{key}.faiss").exists():
        info = json.loads((cache / f"{key}.json").read_text())
        index = faiss.read_index(str(cache / f"{key}.faiss"))
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index, {"build_s": info["build_s"], "cached": True, "built": info["built"]}
    build_s, index = timed(make_index, base, "hnsw")
    info = {"build_s": build_s, "built": time.strftime("%Y-%m-%d"), "faiss_omp_threads": faiss.omp_get_max_threads()}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.faiss.tmp"
        faiss.write_index(index, str(tmp))
        tmp.replace(cache / f"{key}.faiss")
        (cache / f"{key}.json").write_text(json.dumps(info))
    return index, {**info, "cached": False}


def synthetic(n: int, repeats: int = 3, seed: int = 0, cache: Path | None = None) -> dict:
    """Exact vs HNSW on `n` clustered vectors: build time, memory, recall@10, latency, queries/s,
    and recall / queries/s at smaller efSearch values."""
    from crosearch_agent.store import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, make_index

    base, queries = clustered_vectors(n, seed=seed)
    before = rss_mb()
    build_flat, flat = timed(make_index, base, "flat")
    mid = rss_mb()
    hnsw, hnsw_build = _hnsw_index(base, n, seed, cache)
    after = rss_mb()
    del base
    indexes = {"exact": flat, "hnsw": hnsw}
    _, exact_ids = flat.search(queries, K)
    _, hnsw_ids = hnsw.search(queries, K)
    single = _single_query_latencies(indexes, queries, K)
    batch = _batch_times(indexes, queries, K, repeats)
    out = {"n": n, "dim": DIM, "k": K, "batch": BATCH,
           "hnsw_params": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH},
           "recall_at_10": recall_at_k(hnsw_ids, exact_ids)}
    for name, build, mem in (("exact", {"build_s": build_flat, "cached": False}, mid - before),
                             ("hnsw", hnsw_build, after - mid)):
        lat = stats(single[name])
        med_batch = stats(batch[name])["median"]
        out[name] = {**build, "rss_delta_mb": mem,
                     "latency_ms": {k: v * 1000 for k, v in lat.items() if k != "n" and v is not None},
                     "batch_s": med_batch, "batch_qps": BATCH / med_batch if med_batch else None}
    out["hnsw_speedup_latency"] = ratio(out["exact"]["latency_ms"]["median"], out["hnsw"]["latency_ms"]["median"])
    out["hnsw_speedup_batch"] = ratio(out["hnsw"]["batch_qps"], out["exact"]["batch_qps"])
    sweep = {}
    for ef in EF_SWEEP:
        hnsw.hnsw.efSearch = ef
        _, ids = hnsw.search(queries, K)
        med = stats([timed(hnsw.search, queries, K)[0] for _ in range(repeats)])["median"]
        sweep[ef] = {"recall_at_10": recall_at_k(ids, exact_ids), "batch_qps": BATCH / med if med else None}
    hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    sweep[HNSW_EF_SEARCH] = {"recall_at_10": out["recall_at_10"], "batch_qps": out["hnsw"]["batch_qps"]}
    out["ef_search_sweep"] = sweep
    return out


def omp_threads_batch(n: int, repeats: int = 3, seed: int = 1) -> dict:
    """Exact search of a 64-query batch with 1 vs 2 faiss OpenMP threads (interleaved)."""
    import faiss

    from crosearch_agent.store import make_index

    base, queries = clustered_vectors(n, seed=seed)
    index = make_index(base, "flat")
    del base
    times = {1: [], 2: []}
    for _ in range(repeats):
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            times[threads].append(timed(index.search, queries, K)[0])
    faiss.omp_set_num_threads(1)
    med = {t: stats(v)["median"] for t, v in times.items()}
    return {"n": n, "batch_s_1_thread": med[1], "batch_s_2_threads": med[2],
            "speedup_2_threads": ratio(med[1], med[2])}


# ---------------------------------------------------------------- the real collection

def real_collection(collection: str = "xquad-partial", n_queries: int = BATCH, depth: int = 50, seed: int = 0) -> dict:
    """One query over every language index of a built collection: sequential vs parallel."""
    import faiss

    from crosearch_agent.store import collection_dir, load_collection

    coll = load_collection(collection_dir(collection), verify=False)
    langs = coll.languages
    rng = np.random.default_rng(seed)
    # Queries near stored passages (a passage vector plus noise): search cost does not depend on
    # the text, and this needs no embedder.
    picks = [langs[rng.integers(len(langs))] for _ in range(n_queries)]
    queries = np.stack([coll.vector(l, int(rng.integers(coll.indexes[l].ntotal))) for l in picks])
    queries += rng.standard_normal(queries.shape).astype(np.float32) * 0.05
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    queries = queries.astype(np.float32)

    def sequential(q):
        return [coll.search(l, q, depth) for l in langs]

    pool = ThreadPoolExecutor(max_workers=2)

    def threaded(q):
        return list(pool.map(lambda l: coll.search(l, q, depth), langs))

    modes = {"sequential, 1 omp thread": (sequential, 1), "sequential, 2 omp threads": (sequential, 2),
             "thread pool (2) over indexes, 1 omp thread": (threaded, 1)}
    per_query = {m: [] for m in modes}
    try:
        for name, (fn, threads) in modes.items():  # warm-up
            faiss.omp_set_num_threads(threads)
            fn(queries[:1])
        for i in range(n_queries):
            for name, (fn, threads) in modes.items():
                faiss.omp_set_num_threads(threads)
                per_query[name].append(timed(fn, queries[i:i + 1])[0])
        faiss.omp_set_num_threads(1)
        # All queries at once: one faiss call per index, vs the one-query calls above.
        batched = [timed(sequential, queries)[0] for _ in range(3)]
    finally:
        pool.shutdown()
        faiss.omp_set_num_threads(1)
    out = {"collection": collection, "languages": len(langs), "vectors": sum(i.ntotal for i in coll.indexes.values()),
           "depth": depth, "queries": n_queries, "modes": {}}
    for name, times in per_query.items():
        s = stats(times)
        out["modes"][name] = {"median_ms": s["median"] * 1000, "p95_ms": s["p95"] * 1000}
    base = out["modes"]["sequential, 1 omp thread"]["median_ms"]
    for name, m in out["modes"].items():
        m["speed_vs_sequential_1"] = ratio(base, m["median_ms"])
    batch_per_query = stats(batched)["median"] / n_queries * 1000
    out["batched_per_query_ms"] = batch_per_query
    out["batched_speedup"] = ratio(base, batch_per_query)
    return out


# ---------------------------------------------------------------- languages spread over services

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spread_services(collection: str = "xquad-partial", n_queries: int = 24, n_down: int = 12, groups: int = 3,
                    k: int = 5, log_dir: Path | None = None) -> dict:
    """Median / p95 ms of one global search (the question's language first, then every other,
    k items, the query embedded by whoever searches): in-process, one service with every
    language, `groups` services with a share each; then the spread with one service stopped,
    against in-process on fresh questions (the services remember the queries they embedded).
    Also whether the evidence matched in-process, and the bytes of the services' answers."""
    import os
    import subprocess
    import sys
    import tempfile

    import httpx

    from benchmarks.common import sample_questions
    from crosearch_agent.config import REPO_ROOT, Settings
    from crosearch_agent.remote import RemoteRetriever, RetrievalServiceError
    from crosearch_agent.retriever import load_retriever
    from crosearch_agent.spread import SpreadRetriever

    local = load_retriever(Settings(collection=collection), verify=False)
    langs = local.languages
    shares = [langs[i::groups] for i in range(groups)]
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="spread-bench-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    procs = []

    def start(languages) -> tuple[subprocess.Popen, str]:
        port = _free_port()
        cmd = [sys.executable, "-m", "crosearch_agent.serve_retrieval", "--collection", collection, "--port", str(port)]
        cmd += ["--languages", ",".join(languages)] if languages else []
        log = open(log_dir / f"service-{port}.log", "w")
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        return proc, f"http://127.0.0.1:{port}"

    def wait_until_up(proc, url: str, deadline: float) -> None:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the retrieval service for {url} exited (code {proc.returncode}); see {log_dir}")
            try:
                httpx.get(url + "/health", timeout=2, trust_env=False).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the retrieval service at {url} did not come up; see {log_dir}") from None
                time.sleep(0.5)

    def wide(lang: str) -> list[str]:
        return [lang] + [l for l in langs if l != lang]

    try:
        whole = start(None)
        parts = [start(share) for share in shares]
        deadline = time.monotonic() + 600
        for proc, url in [whole] + parts:
            wait_until_up(proc, url, deadline)
        one = RemoteRetriever(whole[1])
        spread = SpreadRetriever({url: share for (_, url), share in zip(parts, shares)}, rrf_k=local.rrf_k,
                                 align_threshold=local.align_threshold, score_weight=local.score_weight,
                                 log=lambda *_: None)
        modes = {"in-process": lambda q, l: local.search(q, wide(l), k, l),
                 "1 service (12 languages)": lambda q, l: one.search(q, wide(l), k, l),
                 f"{groups} services ({len(langs) // groups} languages each)": lambda q, l: spread.search(q, wide(l), k, l)}
        questions = sample_questions(3 + n_queries + n_down, "dev")
        warm, timed_qs, down_qs = questions[:3], questions[3:3 + n_queries], questions[3 + n_queries:]
        for q, l in warm:
            for fn in modes.values():
                fn(q, l)
        per_mode = {m: [] for m in modes}
        same = {m: 0 for m in modes}
        for q, l in timed_qs:  # interleaved: every mode sees the same load on the machine
            want = None
            for name, fn in modes.items():
                dt, got = timed(fn, q, l)
                per_mode[name].append(dt)
                want = got if want is None else want
                same[name] += [e.passage_ids for e in got] == [e.passage_ids for e in want] and all(
                    abs(a.score - b.score) <= 1e-6 * max(1.0, abs(b.score)) for a, b in zip(got, want))
        # The part of the in-process time that is embedding the question (the cache bypassed):
        # each service of the spread does this too, for the same question, at the same time.
        encode = [timed(local.embedder._encode, [q], "query", False)[0] for q, _ in timed_qs]
        body = {"queries": [timed_qs[0][0]], "depth": max(k, local.depth), "vectors": True}
        wire = sum(len(httpx.post(url + "/hits", json={**body, "languages": share}, timeout=60, trust_env=False).content)
                   for (_, url), share in zip(parts, shares))
        # One service stopped: its languages are skipped, the others answer.
        stopped_proc, stopped_url = parts[0]
        stopped_proc.terminate()
        stopped_proc.wait(timeout=30)
        down = {"in-process": [], "one stopped": []}
        missing = set()
        for q, l in down_qs:
            down["in-process"].append(timed(modes["in-process"], q, l)[0])
            dt, got = timed(spread.search, q, wide(l), k, l)
            down["one stopped"].append(dt)
            missing |= set(got.missing)
    except (RetrievalServiceError, OSError) as err:
        raise RuntimeError(f"the services did not run: {err}") from err
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
    base = stats(per_mode["in-process"])["median"]
    out = {"collection": collection, "languages": len(langs), "services": groups, "shares": shares, "k": k,
           "queries": len(timed_qs), "wire_kb_per_query": wire / 1024, "encode_ms": stats(encode)["median"] * 1000,
           "modes": {}}
    for name, times in per_mode.items():
        st = stats(times)
        out["modes"][name] = {"median_ms": st["median"] * 1000, "p95_ms": st["p95"] * 1000,
                              "vs_in_process": ratio(st["median"], base), "same_evidence": same[name]}
    down_base = stats(down["in-process"])["median"]
    st = stats(down["one stopped"])
    out["one_stopped"] = {"queries": len(down_qs), "stopped": stopped_url, "missing": sorted(missing),
                          "in_process_median_ms": down_base * 1000, "median_ms": st["median"] * 1000,
                          "p95_ms": st["p95"] * 1000, "vs_in_process": ratio(st["median"], down_base)}
    return out


# ---------------------------------------------------------------- the benchmark

def run(quick: bool = False, ctx: dict | None = None) -> BenchResult:
    import faiss
    import psutil

    ctx = ctx or {}
    faiss.omp_set_num_threads(1)  # what the tests and the service use on these 2-core machines
    # Quick: 3 x 10^4 at most (an HNSW build of 10^5 takes ~3 minutes on one core here).
    sizes = ctx.get("retrieval_sizes") or ([10_000, 30_000] if quick else [10_000, 100_000, 1_000_000])
    repeats = 3 if quick else 5
    cache = ctx.get("cache_dir")
    result = BenchResult("retrieval", config={"sizes": sizes, "dim": DIM, "k": K, "batch": BATCH,
                                              "faiss_omp_threads": 1, "repeats": repeats,
                                              "hnsw_build_cache": bool(cache),
                                              "data": "unit vectors around sqrt(n) random centres, noise 0.8"})
    synth = {}
    table = Table("Exact (IndexFlatIP) vs HNSW, synthetic 384-d vectors, 1 faiss thread",
                  ["vectors", "HNSW recall@10", "build exact s", "build HNSW s", "exact ms/query",
                   "HNSW ms/query", "HNSW speed-up (1 query)", "exact q/s (batch 64)", "HNSW q/s (batch 64)",
                   "HNSW speed-up (batch)", "HNSW extra RSS MB"])
    for n in sizes:
        need_gb = n * DIM * 4 * 3.5 / 1024 ** 3  # data + exact copy + HNSW copy and links
        avail_gb = psutil.virtual_memory().available / 1024 ** 3
        if need_gb > avail_gb * 0.7:
            result.notes.append(f"10^{int(np.log10(n))} vectors skipped: needs ~{need_gb:.1f} GB, "
                                f"{avail_gb:.1f} GB available")
            continue
        t = time.perf_counter()
        s = synth[n] = synthetic(n, repeats, cache=cache)
        s["wall_s"] = time.perf_counter() - t
        if s["hnsw"]["cached"]:
            result.notes.append(f"HNSW build time at {n:,} is the one measured when the cached index was built "
                                f"({s['hnsw']['built']}); the searches were measured in this run.")
        table.rows.append([n, s["recall_at_10"], s["exact"]["build_s"], s["hnsw"]["build_s"],
                           s["exact"]["latency_ms"]["median"], s["hnsw"]["latency_ms"]["median"],
                           fmt_ratio(s["hnsw_speedup_latency"]), s["exact"]["batch_qps"], s["hnsw"]["batch_qps"],
                           fmt_ratio(s["hnsw_speedup_batch"]), s["hnsw"]["rss_delta_mb"]])
    result.tables.append(table)
    if synth:
        efs = sorted(next(iter(synth.values()))["ef_search_sweep"])
        result.tables.append(Table("HNSW efSearch: recall@10 / queries/s (batch 64)",
                                   ["vectors"] + [f"ef {ef}" for ef in efs],
                                   [[n] + [f"{s['ef_search_sweep'][ef]['recall_at_10']:.3f} / "
                                           f"{s['ef_search_sweep'][ef]['batch_qps']:,.0f}" for ef in efs]
                                    for n, s in synth.items()]))
    omp = omp_threads_batch(sizes[1] if len(sizes) > 1 else sizes[0], repeats)
    result.tables.append(Table(f"Exact search, batch of 64 over {omp['n']:,} vectors: faiss OpenMP threads",
                               ["1 thread s", "2 threads s", "2 threads speed-up"],
                               [[omp["batch_s_1_thread"], omp["batch_s_2_threads"], fmt_ratio(omp["speedup_2_threads"])]]))
    try:
        real = real_collection()
    except Exception as err:  # no built index: say how to build it, keep the synthetic part
        real = None
        result.notes.append(f"real collection part not available: {err}")
    if real:
        result.tables.append(Table(
            f"One query over the {real['languages']} language indexes of {real['collection']} "
            f"({real['vectors']:,} vectors, top {real['depth']} per language)",
            ["mode", "median ms/query", "p95 ms/query", "speed vs sequential, 1 thread"],
            [[name, m["median_ms"], m["p95_ms"], fmt_ratio(m["speed_vs_sequential_1"])] for name, m in real["modes"].items()]
            + [["batch of 64: one faiss call per index (per query)", real["batched_per_query_ms"], None,
                fmt_ratio(real["batched_speedup"])]]))
    try:
        spread = spread_services(n_queries=12 if quick else 48, n_down=6 if quick else 24)
    except Exception as err:  # no built index, or the services could not start: say so, keep the rest
        spread = None
        result.notes.append(f"spread services part not available: {type(err).__name__}: {err}")
    if spread:
        rows = [[name, m["median_ms"], m["p95_ms"], fmt_ratio(m["vs_in_process"]), f"{m['same_evidence']}/{spread['queries']}"]
                for name, m in spread["modes"].items()]
        down = spread["one_stopped"]
        rows.append([f"{spread['services']} services, one stopped ({', '.join(down['missing'])} skipped)", down["median_ms"],
                     down["p95_ms"], fmt_ratio(down["vs_in_process"]), "-"])
        result.tables.append(Table(
            f"One question over {spread['collection']}'s {spread['languages']} languages (global search, k={spread['k']}, "
            f"query embedded by the searcher): in-process vs retrieval services on loopback, one process each",
            ["mode", "median ms/query", "p95 ms/query", "time vs in-process", "same evidence as in-process"], rows))
        result.notes.append(f"Spread over {spread['services']} services, one query's answers (raw hits with their "
                            f"float32 vectors) weigh {spread['wire_kb_per_query']:.0f} KB in all. Embedding the question "
                            f"is {spread['encode_ms']:.0f} ms of the in-process "
                            f"{spread['modes']['in-process']['median_ms']:.0f} ms, and every service embeds it itself: "
                            f"here {spread['services']} services and the client share 2 cores, so the spread's time "
                            "ratio is mostly that work done 3 times on the same cores, not what separate machines "
                            "(each embedding in parallel) would show.")
    result.metrics = {"synthetic": {str(n): v for n, v in synth.items()}, "omp_threads": omp, "real_collection": real,
                      "spread_services": spread}

    # Findings, in words.
    big = synth[max(synth)] if synth else None
    parts = []
    if big:
        parts.append(f"HNSW at {big['n']:,}: recall@10 {big['recall_at_10']:.3f}, "
                     f"{fmt_ratio(big['hnsw_speedup_latency'])} exact per query, "
                     f"{fmt_ratio(big['hnsw_speedup_batch'])} per batch of 64, build "
                     f"{fmt_ratio(ratio(big['hnsw']['build_s'], big['exact']['build_s']))} slower")
        for n, s in synth.items():
            if s["hnsw_speedup_latency"] and s["hnsw_speedup_latency"] < 1:
                result.notes.append(f"At {n:,} vectors HNSW is slower per query than exact search "
                                    f"({fmt_ratio(s['hnsw_speedup_latency'])}): the default flat index is the right one there.")
    parts.append(f"2 faiss threads {fmt_ratio(omp['speedup_2_threads'])} of 1 (batch 64, {omp['n']:,})")
    if real:
        par = real["modes"]["thread pool (2) over indexes, 1 omp thread"]["speed_vs_sequential_1"]
        two = real["modes"]["sequential, 2 omp threads"]["speed_vs_sequential_1"]
        parts.append(f"12 indexes: thread pool {fmt_ratio(par)}, 2 omp threads {fmt_ratio(two)}, "
                     f"batched {fmt_ratio(real['batched_speedup'])} vs sequential")
        result.notes.append(f"The real collection's indexes hold ~{real['vectors'] // real['languages']} vectors each: "
                            "a search is dominated by per-call overhead, so parallelism over indexes buys little; "
                            "batching queries (one faiss call per index, as `Retriever.search_vectors` does for a batch) "
                            "is what pays.")
        if par and par > 1.2:
            result.notes.append("The retriever searches the language indexes one after another; a thread pool "
                                f"over them was {fmt_ratio(par)} faster here.")
    if spread:
        name = next(n for n in spread["modes"] if n.startswith(f"{spread['services']} services"))
        parts.append(f"12 languages on {spread['services']} services {fmt_ratio(spread['modes'][name]['vs_in_process'])} "
                     f"the in-process time (1 service {fmt_ratio(spread['modes']['1 service (12 languages)']['vs_in_process'])}), "
                     f"same evidence {spread['modes'][name]['same_evidence']}/{spread['queries']}")
    if omp["speedup_2_threads"] and omp["speedup_2_threads"] < 1:
        result.notes.append("2 faiss OpenMP threads were slower than 1 on this shared machine "
                            f"({fmt_ratio(omp['speedup_2_threads'])}); keep 1.")
    result.summary = "; ".join(parts)
    return result
