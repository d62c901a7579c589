"""Index memory and recall: flat, HNSW and IVF-PQ (+ exact re-rank) at 10^5-10^7 vectors.

For each size, 384-d synthetic vectors are generated in chunks into a float32 `.npy` on disk
(`SyntheticEmbeddings`, below) and read back memory-mapped; the exact top 10 of 200 held-out
queries is found by chunked brute force over that file. Each index type is then built the
way the store builds it (flat and HNSW by `store.make_index`, IVF-PQ by
`compressed.build`, all fed CHUNK rows at a time), written to disk, dropped, and loaded
fresh, so that its memory is what serving it costs:

- serialized size: bytes per vector of the index file (IVF-PQ: codes, ids, the quantizers);
- RSS growth: the process's anonymous resident memory after loading minus before (from
  /proc/self/status RssAnon), and after the queries; the IVF-PQ vector file is mapped, so
  the rows its re-rank read show up as file-backed pages (RssFile), reported apart: the
  kernel can drop those at any time;
- recall@10 against the exact top 10, and ms per query (one query at a time, one faiss thread,
  as the retrieval service searches), with an nprobe x rerank sweep for IVF-PQ.

Builds use `--threads` faiss threads (default 1); flat and HNSW are measured up to 10^6 (HNSW at 10^6
takes ~15 minutes here; its build is cached like the retrieval benchmark's), IVF-PQ up to
10^7 (15.4 GB of vectors on disk, trained on a sample, added in chunks). The vector files
are deleted after each size.
"""
from __future__ import annotations

import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import BenchResult, Table, fmt_ratio, stats, timed

DIM = 384
K = 10
N_QUERIES = 200
CHUNK = 65_536
MB = 1024 * 1024
MAX_EXACT = 2_000_000     # flat/HNSW above this: 3 GB+ in RAM, and HNSW builds for hours on 2 cores
DATA_VERSION = 3          # part of the HNSW cache key: bump when SyntheticEmbeddings changes
SWEEP = ((16, 100), (32, 100), (64, 100), (32, 200), (64, 200), (128, 200), (128, 400), (128, 1000), (256, 400),
         (256, 1000))  # (nprobe, rerank)


# ---------------------------------------------------------------- the data

class SyntheticEmbeddings:
    """`n` unit vectors shaped like sentence embeddings, as a read-only array: any slice of
    rows is generated on demand, the same whatever the chunking (seeded per block of CHUNK).

    How they are made: x = normalise(mean + sum_l w_l c_l[group_l(x)] + NOISE e). `mean` is
    one direction all vectors share (e5 vectors have pairwise cosines ~0.75); the c_l are
    centres of nested groups, LEVELS passages per group (topics of 10,000, then 1,000, 100
    and leaf groups of 10), so neighbourhoods exist at every scale and a bigger collection is
    a denser one, as with real text. The centres are Gaussian with the variance of the k-th
    direction of a random basis falling as k^-SPECTRUM, the decay of the principal components
    of real multilingual-e5-small passage vectors. A passage's own noise e lies mostly
    (1 - ISO of its variance) in a RANK-dimensional subspace of its leaf group (one of POOL
    random bases, signs flipped per group), the rest spread like the centres: text varies
    locally along few directions,
    and real e5 vectors have a local intrinsic dimension of ~29 (MLE, 20 neighbours), where
    full-rank noise gives ~50 and, at 10^7 vectors, neighbours scattered over most of an IVF
    index's lists (measured: recall@10 0.53 at nprobe 32 of 2048).

    The constants were chosen so that, at 8,157 vectors, the neighbour cosines, the local
    intrinsic dimension and the recall of an IVF index at 1-8% of lists probed come close to
    those of as many real e5 vectors (TyDi QA passages of the `tydiqa-goldp` index);
    `calibration` measures both sides when that index is built. No setting matched all of
    them: these are a little harder than the real vectors in cosines and local dimension
    (~36 vs ~29) and a little easier in IVF recall at 8,157 vectors. Not uniform noise on the sphere, which has
    no neighbours to find, nor a flat mixture of equal clusters, which at 10^6 needs 16% of
    the lists probed for recall 0.9 (measured), unlike the collections IVF is used on.
    """

    LEVELS = (10_000, 1_000, 100, 10)
    WEIGHTS = (0.2, 0.2, 0.15, 0.15)
    NOISE = 0.6
    SPECTRUM = 0.6
    RANK, ISO, POOL = 12, 0.1, 256

    def __init__(self, n: int, dim: int | None = None, seed: int = 0, stream: int = 0):
        dim = dim or DIM
        self.n, self.dim, self.seed, self.stream = n, dim, seed, stream
        self.shape = (n, dim)
        rng = np.random.default_rng([seed, 0])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        var = np.arange(1, dim + 1, dtype=np.float64) ** -self.SPECTRUM
        self.scale = np.sqrt(var / var.sum()).astype(np.float32)
        self.basis = basis.astype(np.float32)
        mean = rng.standard_normal(dim).astype(np.float32)
        self.groups = [max(1, n // size) for size in self.LEVELS]
        leaves = self.groups[-1]
        centres = np.tile(mean / np.linalg.norm(mean), (leaves, 1))
        for count, weight in zip(self.groups, self.WEIGHTS):
            level = self._gaussian(rng, count) * weight
            for s in range(0, leaves, CHUNK):  # group of leaf j at this level: j * count // leaves
                centres[s:s + CHUNK] += level[np.arange(s, min(s + CHUNK, leaves), dtype=np.int64) * count // leaves]
        self.centres = centres
        pool = np.random.default_rng([seed, 2]).standard_normal((self.POOL, dim, self.RANK))
        self.subspaces = np.linalg.qr(pool)[0].astype(np.float32)  # POOL orthonormal bases, dim x RANK
        # Each leaf group's own subspace: a pool basis with the leaf's random sign per dimension,
        # so no two groups share one (a shared subspace makes "noise twins" across topics).
        self.signs = np.random.default_rng([seed, 3]).integers(0, 256, (leaves, (dim + 7) // 8), dtype=np.uint8)

    @classmethod
    def queries(cls, base: "SyntheticEmbeddings", n: int) -> "SyntheticEmbeddings":
        """`n` held-out vectors from the same groups as `base` (another random stream)."""
        out = cls.__new__(cls)
        out.__dict__.update(base.__dict__)
        out.n, out.shape, out.stream = n, (n, base.dim), 1
        return out

    def _gaussian(self, rng, count: int) -> np.ndarray:
        return (rng.standard_normal((count, self.dim), dtype=np.float32) * self.scale) @ self.basis.T

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1 + self.stream, b])
        m = min(CHUNK, self.n - b * CHUNK)
        leaf = rng.integers(0, len(self.centres), m)
        local = rng.standard_normal((m, self.RANK), dtype=np.float32) / np.sqrt(self.RANK)
        noise = self.ISO ** 0.5 * self._gaussian(rng, m)
        which = leaf % self.POOL
        own = np.empty_like(noise)
        for p in np.unique(which):
            rows = np.flatnonzero(which == p)
            own[rows] = local[rows] @ self.subspaces[p].T
        own *= np.unpackbits(self.signs[leaf], axis=1, count=self.dim).astype(np.float32) * 2 - 1
        noise += (1 - self.ISO) ** 0.5 * own
        x = self.centres[leaf] + self.NOISE * noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def __getitem__(self, rows) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("SyntheticEmbeddings supports row slices only")
        start, stop, _ = rows.indices(self.n)
        if stop <= start:
            return np.empty((0, self.dim), dtype=np.float32)
        blocks = [self._block(b) for b in range(start // CHUNK, (stop - 1) // CHUNK + 1)]
        first = (start // CHUNK) * CHUNK
        return np.concatenate(blocks)[start - first:stop - first]


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Positions of the exact top-k inner products, by brute force CHUNK*4 rows at a time."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    step = CHUNK * 4
    for s in range(0, len(vectors), step):
        sims = queries @ np.asarray(vectors[s:s + step], dtype=np.float32).T
        part = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each exact top-k that `found` holds."""
    k = exact.shape[1]
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(e.tolist())) / k for f, e in zip(found, exact)]))


# ---------------------------------------------------------------- memory

def rss_parts_mb() -> dict[str, float]:
    """This process's resident memory, anonymous (heap: the indexes) and file-backed (mapped
    files: the IVF-PQ vectors the re-rank touched, libraries), in MB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:")):
                name, value = line.split(":")
                out[name.strip()[3:].lower()] = int(value.split()[0]) / 1024
    return out


class AnonPeak:
    """The largest growth of this process's anonymous resident memory while the block runs
    (sampled every 0.2 s). Not psutil's RSS: building from a memory-mapped file pulls the
    whole file into file-backed RSS, which is page cache, not memory the build needs."""

    def __init__(self, interval: float = 0.2):
        import threading

        self.interval, self.growth_mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.growth_mb = max(self.growth_mb, rss_parts_mb()["anon"] - self._base)
            self._stop.wait(self.interval)

    def __enter__(self) -> "AnonPeak":
        self._base = rss_parts_mb()["anon"]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _settle() -> None:
    gc.collect()
    try:  # hand freed heap back to the OS, so the next "before" is not inflated by it
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------- one index type

def _build(kind: str, vectors: np.ndarray, n: int, cache: Path | None):
    """(index, build seconds, cached?) for one index type over the memory-mapped `vectors`."""
    import faiss

    from crosearch_agent import compressed, store

    if kind == "ivfpq":
        seconds, (index, info) = timed(compressed.build, vectors)
        return index, seconds, False, info
    key = f"{kind}-n{n}-d{DIM}-M{store.HNSW_M}-efc{store.HNSW_EF_CONSTRUCTION}-data{DATA_VERSION}-faiss{faiss.__version__}"
    if kind == "hnsw" and cache is not None and (cache / f"{key}.faiss").exists() and (cache / f"{key}.json").exists():
        info = json.loads((cache / f"{key}.json").read_text())
        return faiss.read_index(str(cache / f"{key}.faiss")), info["build_s"], True, {"built": info["built"]}

    def make():
        index = store.make_index(np.empty((0, DIM), dtype=np.float32), kind)
        for s in range(0, n, CHUNK):
            index.add(np.ascontiguousarray(vectors[s:s + CHUNK]))
        return index

    seconds, index = timed(make)
    info = {"built": time.strftime("%Y-%m-%d")}
    if kind == "hnsw" and cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.faiss.tmp"
        faiss.write_index(index, str(tmp))
        tmp.replace(cache / f"{key}.faiss")
        (cache / f"{key}.json").write_text(json.dumps({"build_s": seconds, **info}))
    return index, seconds, False, info


def _load(kind: str, info: dict, path: Path, vectors_path: Path, nprobe: int, rerank: int):
    import faiss

    from crosearch_agent import compressed, store

    if info.get("kind") == "ivfpq":
        index = compressed.read_index(path)
        return compressed.open_index(index, np.load(vectors_path, mmap_mode="r"), nprobe, rerank)
    index = faiss.read_index(str(path))
    if kind == "hnsw":
        index.hnsw.efSearch = store.HNSW_EF_SEARCH
    return index


def _latencies(index, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    found, times = [], []
    for q in queries:
        t, (_, ids) = timed(index.search, q[None, :], K)
        found.append(ids[0])
        times.append(t)
    return np.array(found), times


def measure(kind: str, vectors: np.ndarray, vectors_path: Path, queries: np.ndarray, exact: np.ndarray,
            work: Path, cache: Path | None, build_threads: int, nprobe: int, rerank: int, sweep: bool) -> dict:
    """Build, serialise, reload and query one index type; every figure of its table row."""
    import faiss

    n = len(vectors)
    _settle()
    faiss.omp_set_num_threads(build_threads)
    with AnonPeak() as peak:
        index, build_s, cached, info = _build(kind, vectors, n, cache)
    faiss.omp_set_num_threads(1)
    path = work / f"{kind}.faiss"
    write_s, _ = timed(faiss.write_index, index, str(path))
    file_bytes = path.stat().st_size
    del index
    _settle()
    before = rss_parts_mb()
    loaded = _load(kind, info, path, vectors_path, nprobe, rerank)
    after_load = rss_parts_mb()
    found, times = _latencies(loaded, queries)
    after_queries = rss_parts_mb()
    lat = stats(times)
    out = {"type": kind, "n": n, "build_s": build_s, "build_cached": cached, "build_threads": build_threads,
           "build_peak_rss_anon_growth_mb": peak.growth_mb,
           "index_file_bytes": file_bytes, "bytes_per_vector": file_bytes / n,
           "mb_per_million": file_bytes / n * 1e6 / MB,
           "rss_anon_growth_load_mb": after_load["anon"] - before["anon"],
           "rss_anon_growth_after_queries_mb": after_queries["anon"] - before["anon"],
           "rss_file_growth_after_queries_mb": after_queries["file"] - before["file"],
           "recall_at_10": recall_at_k(found, exact),
           "latency_ms": {k: v * 1000 for k, v in lat.items() if k != "n" and v is not None},
           "write_s": write_s, **info}
    out["rss_mb_per_million"] = out["rss_anon_growth_load_mb"] / n * 1e6
    if kind == "ivfpq" and hasattr(loaded, "rerank"):
        out["settings"] = {"nprobe": loaded.nprobe, "rerank": loaded.rerank}
        if sweep:
            out["sweep"] = _sweep(loaded, queries, exact)
    del loaded
    path.unlink()
    _settle()
    return out


def _sweep(index, queries: np.ndarray, exact: np.ndarray) -> list[dict]:
    """Recall and ms/query of IVF-PQ at other nprobe / rerank settings (search-time only)."""
    keep = index.ivf.nprobe, index.rerank
    rows = []
    for nprobe, rerank in SWEEP:
        if nprobe > index.ivf.nlist:
            continue
        index.ivf.nprobe, index.rerank = nprobe, rerank
        found, times = _latencies(index, queries)
        rows.append({"nprobe": nprobe, "rerank": rerank, "recall_at_10": recall_at_k(found, exact),
                     "median_ms": stats(times)["median"] * 1000})
    index.ivf.nprobe, index.rerank = keep
    return rows


# ---------------------------------------------------------------- calibration

def _neighbour_stats(x: np.ndarray) -> dict:
    """Pairwise and nearest-neighbour cosines, and the local intrinsic dimension (the median
    maximum-likelihood estimate from each vector's 20 nearest distances, Levina & Bickel)."""
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    upper = sims[np.triu_indices(len(x), 1)]
    top = -np.sort(-sims, axis=1)[:, :100]
    dist = np.sqrt(np.maximum(2 - 2 * top[:, :20].astype(np.float64), 1e-12))
    lid = -1 / np.mean(np.log(dist / dist[:, -1:]), axis=1)
    return {"pair_cos_mean": float(upper.mean()), "pair_cos_std": float(upper.std()),
            "nn1_cos": float(np.median(top[:, 0])), "nn10_cos": float(np.median(top[:, 9])),
            "nn100_cos": float(np.median(top[:, 99])), "local_dim": float(np.median(lid))}


def _ivf_curve(base: np.ndarray, queries: np.ndarray, nlist: int = 128) -> dict:
    import faiss

    exact = exact_top_k(base, queries)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(base.shape[1]), base.shape[1], nlist)
    ivf.train(base)
    ivf.add(base)
    out = {}
    for share in (0.01, 0.02, 0.04, 0.08):
        ivf.nprobe = max(1, round(share * nlist))
        out[f"{share:.0%}"] = recall_at_k(ivf.search(queries, K)[1], exact)
    return out


def calibration() -> dict:
    """The synthetic data's neighbour cosines and IVF recall curve beside those of the real e5
    vectors of the built `tydiqa-goldp` index (200 of them held out as queries), when built."""
    import faiss

    out = {}
    try:
        from crosearch_agent.store import collection_dir, load_collection

        coll = load_collection(collection_dir("tydiqa-goldp"), verify=False)
        real = np.concatenate([coll.indexes[l].reconstruct_n(0, coll.indexes[l].ntotal) for l in coll.languages])
        perm = np.random.default_rng(0).permutation(len(real))
        real_q, real_b = real[perm[:N_QUERIES]], real[perm[N_QUERIES:]]
    except Exception as err:  # not built here: report the synthetic side only
        real_b = None
        out["real_error"] = f"{type(err).__name__}: {err}"[:200]
    n = len(real_b) if real_b is not None else 8157
    synth = SyntheticEmbeddings(n, seed=7)
    base, queries = synth[0:n], SyntheticEmbeddings.queries(synth, N_QUERIES)[0:N_QUERIES]
    faiss.omp_set_num_threads(1)
    out["synthetic"] = {"n": n, **_neighbour_stats(base[:5000]), "ivf_recall_at_share_of_lists": _ivf_curve(base, queries)}
    if real_b is not None:
        out["real"] = {"n": len(real_b), "collection": "tydiqa-goldp", **_neighbour_stats(real_b[:5000]),
                       "ivf_recall_at_share_of_lists": _ivf_curve(real_b, real_q)}
    return out


# ---------------------------------------------------------------- the benchmark

def run(quick: bool = False, ctx: dict | None = None) -> BenchResult:
    import psutil

    from crosearch_agent import compressed
    from crosearch_agent.config import Settings

    ctx = ctx or {}
    sizes = ctx.get("index_sizes") or ([20_000] if quick else [100_000, 1_000_000, 10_000_000])
    types = ctx.get("index_types") or ["flat", "hnsw", "ivfpq"]
    nprobe, rerank = ctx.get("nprobe") or Settings.nprobe, ctx.get("rerank") or Settings.rerank
    cache = ctx.get("cache_dir")
    # benchmarks.run --threads (default 1): on this shared 2-core machine 2 faiss threads
    # measured slower than 1 (the other core is usually busy), here as in the retrieval benchmark.
    build_threads = ctx.get("threads") or 1
    scratch = Path(ctx.get("scratch_dir") or tempfile.gettempdir())
    result = BenchResult("index_memory", config={
        "sizes": sizes, "types": types, "dim": DIM, "k": K, "queries": N_QUERIES, "build_threads": build_threads,
        "search_threads": 1, "nprobe": nprobe, "rerank": rerank, "hnsw_build_cache": bool(cache),
        "data": "hierarchical Gaussian mixture around a shared mean, e5-like spectrum (SyntheticEmbeddings)",
        "data_params": {"levels": SyntheticEmbeddings.LEVELS, "weights": SyntheticEmbeddings.WEIGHTS,
                        "noise": SyntheticEmbeddings.NOISE, "spectrum": SyntheticEmbeddings.SPECTRUM}})
    rows = []
    for n in sizes:
        free_gb = shutil.disk_usage(scratch).free / 1024 ** 3
        if n * DIM * 4 * 1.15 / 1024 ** 3 > free_gb:
            result.notes.append(f"{n:,} vectors skipped: {n * DIM * 4 / 1024 ** 3:.1f} GB of vectors, {free_gb:.0f} GB free disk")
            continue
        work = Path(tempfile.mkdtemp(prefix="index-memory-", dir=scratch))
        try:
            synth = SyntheticEmbeddings(n)
            vectors_path = work / "vectors.npy"
            gen_s, vfile = timed(compressed.write_vectors, synth, vectors_path)
            queries = SyntheticEmbeddings.queries(synth, N_QUERIES)[0:N_QUERIES]
            del synth
            _settle()
            vectors = np.load(vectors_path, mmap_mode="r")
            exact_s, exact = timed(exact_top_k, vectors, queries)
            for kind in types:
                if kind != "ivfpq" and n > MAX_EXACT:
                    result.notes.append(f"{kind} at {n:,} not measured: {n * DIM * 4 / 1024 ** 3:.1f} GB of vectors in RAM"
                                        + (" and a build of hours on 2 cores" if kind == "hnsw" else ""))
                    continue
                need_gb = n * DIM * 4 * (1.3 if kind != "ivfpq" else 0.1) / 1024 ** 3
                avail_gb = psutil.virtual_memory().available / 1024 ** 3
                if need_gb > avail_gb * 0.8:
                    result.notes.append(f"{kind} at {n:,} skipped: needs ~{need_gb:.1f} GB, {avail_gb:.1f} GB available")
                    continue
                t = time.perf_counter()
                row = measure(kind, vectors, vectors_path, queries, exact, work, cache, build_threads, nprobe, rerank,
                              sweep=True)
                row.update(wall_s=time.perf_counter() - t, generate_and_write_vectors_s=gen_s, exact_top10_s=exact_s,
                           vectors_file_bytes=vectors_path.stat().st_size)
                rows.append(row)
                print(f"[index_memory] {kind} {n:,}: recall {row['recall_at_10']:.3f}, {row['bytes_per_vector']:.0f} B/vector, "
                      f"build {row['build_s']:.0f} s", flush=True)
            del vectors
        finally:
            shutil.rmtree(work, ignore_errors=True)  # 15 GB at 10^7
    result.metrics = {"rows": rows}
    if ctx.get("calibration", True):
        try:
            result.metrics["calibration"] = calibration()
        except Exception as err:
            result.notes.append(f"calibration not measured: {type(err).__name__}: {err}")
    _report(result, rows)
    return result


def _report(result: BenchResult, rows: list[dict]) -> None:
    flat_bpv = DIM * 4 + 0.0  # IndexFlatIP: the raw float32 vectors
    main = Table("Index memory and recall@10 against exact, synthetic 384-d vectors (1 faiss thread for queries)",
                 ["vectors", "type", "params", "build s", "file B/vector", "MB per 10^6 (file)",
                  "RSS MB per 10^6 (load)", "vs flat", "recall@10", "ms/query (median)", "ms/query (p95)",
                  "re-rank RssFile MB"])
    for r in rows:
        if r["type"] == "ivfpq" and r.get("kind") == "ivfpq":
            p = r["ivfpq"]
            params = f"nlist {p['nlist']}, m {p['m']}, nprobe {r['settings']['nprobe']}, rerank {r['settings']['rerank']}"
        elif r["type"] == "hnsw":
            from crosearch_agent.store import HNSW_EF_SEARCH, HNSW_M

            params = f"M {HNSW_M}, efSearch {HNSW_EF_SEARCH}"
        else:
            params = r.get("fallback", "exact") if r["type"] == "ivfpq" else "exact"
        main.rows.append([r["n"], r["type"], params, r["build_s"], r["bytes_per_vector"], r["mb_per_million"],
                          r["rss_mb_per_million"], fmt_ratio(flat_bpv / r["bytes_per_vector"]), r["recall_at_10"],
                          r["latency_ms"]["median"], r["latency_ms"]["p95"],
                          r["rss_file_growth_after_queries_mb"] if r["type"] == "ivfpq" else None])
    result.tables.append(main)
    sweeps = [r for r in rows if r.get("sweep")]
    if sweeps:
        settings = [(s["nprobe"], s["rerank"]) for s in sweeps[-1]["sweep"]]
        result.tables.append(Table("IVF-PQ settings: recall@10 / median ms per query",
                                   ["vectors"] + [f"nprobe {a}, rerank {b}" for a, b in settings],
                                   [[r["n"]] + [f"{s['recall_at_10']:.3f} / {s['median_ms']:.2f}" for s in r["sweep"]]
                                    for r in sweeps]))
    cal = result.metrics.get("calibration") or {}
    if cal.get("synthetic"):
        cols = ["pair_cos_mean", "pair_cos_std", "nn1_cos", "nn10_cos", "nn100_cos", "local_dim"]
        shares = list(cal["synthetic"]["ivf_recall_at_share_of_lists"])
        table = Table("Calibration: synthetic vs real e5 passage vectors (IVF-flat, 128 lists, recall@10 at a share of lists probed)",
                      ["vectors", "n"] + cols + [f"IVF recall @ {s}" for s in shares])
        for name in ("synthetic", "real"):
            if cal.get(name):
                c = cal[name]
                table.rows.append([name if name == "synthetic" else f"real ({c['collection']})", c["n"]]
                                  + [c[k] for k in cols] + [c["ivf_recall_at_share_of_lists"][s] for s in shares])
        result.tables.append(table)
    big = [r for r in rows if r["type"] == "ivfpq" and r.get("kind") == "ivfpq"]
    parts = []
    for r in big:
        parts.append(f"IVF-PQ at {r['n']:,}: recall@10 {r['recall_at_10']:.3f}, {r['bytes_per_vector']:.0f} B/vector "
                     f"({fmt_ratio(flat_bpv / r['bytes_per_vector'])} below flat), build {r['build_s']:.0f} s, "
                     f"{r['latency_ms']['median']:.1f} ms/query")
    hnsw = [r for r in rows if r["type"] == "hnsw"]
    if hnsw:
        h = hnsw[-1]
        parts.append(f"HNSW at {h['n']:,}: recall@10 {h['recall_at_10']:.3f}, {h['bytes_per_vector']:.0f} B/vector")
    result.summary = "; ".join(parts) or "no index measured"
    for r in rows:
        if r.get("build_cached"):
            result.notes.append(f"{r['type']} build time at {r['n']:,} is the one measured when the cached index was built "
                                f"({r.get('built')}); memory, recall and latency were measured in this run.")
    result.notes.append(
        "file B/vector is the serialized index; RSS is the anonymous memory the loaded index added (what serving it "
        "costs). IVF-PQ also keeps the float32 vectors on disk (1,536 B/vector, memory-mapped): its re-rank reads "
        "`rerank` rows per query, which appear as file-backed, reclaimable page cache ('re-rank RssFile MB'), not heap.")
