"""Compressed per-language indexes: IVF-PQ codes in memory, exact vectors on disk.

An `ivfpq` language index is two files. `<lang>.faiss` is a FAISS IVF-PQ index: a coarse
k-means quantizer (`nlist` lists) and, per vector, `m` one-byte product-quantizer codes
plus its 8-byte id, so memory holds ~`m + 8` bytes a vector instead of 4 x dim.
`<lang>.npy` holds the full float32 vectors, opened memory-mapped: a search takes the top
`rerank` candidates of the `nprobe` nearest lists by their approximate scores and re-scores
them exactly (inner product) from those rows, so the ranking returned is exact among the
candidates and only the candidates' rows are read from disk.

The quantizers are trained on a sample (`Plan.train_size` rows, read in file order) and the
vectors added `CHUNK` rows at a time, so building takes an array on disk (an `np.memmap`,
or any array-like that slices to float32 rows) and never holds all of it in memory. A
collection too small to train a quantizer (fewer than `MIN_TRAIN` vectors) gets an exact
flat index instead, and its manifest entry says so.

Vectors are unit length (every embedder here normalises), so the coarse and the PQ stage
use L2, whose order then equals inner product's: k-means under inner product, which FAISS
does not normalise, gives lopsided lists (measured: far lower recall at the same `nprobe`).
The re-rank is by inner product, as the flat and HNSW indexes score.

This module knows nothing of manifests or passages: `crosearch_agent.store` calls `build`,
`write_vectors`, `check_vectors` and `open_index`, and turns their `ValueError`s into its
`StoreError`s.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CHUNK = 65_536          # rows per read when adding or copying (100 MB of 384-d float32)
NBITS = 8               # bits per PQ code: 256 centroids per sub-quantizer (FAISS's fast path)
SUBVECTOR_DIMS = 6      # dimensions per PQ sub-quantizer: 384-d -> m = 64 -> 72 bytes a vector with its id
                        # (m 48, 56 bytes: recall@10 0.955 vs 0.985 at rerank 100, 10^5 vectors)
POINTS_PER_LIST = 40    # training points per coarse list (FAISS warns under 39)
MAX_NLIST = 2048        # training and adding cost ~nlist per vector: 10^7 vectors x 2048 lists is ~15 min on 2 cores
PQ_TRAIN = 256 * 64     # training points per sub-quantizer's k-means (64 per centroid)
PQ_ITERATIONS = 10      # k-means rounds per sub-quantizer: 25 (FAISS's default) took 3.4x as long, for 1% less error
MIN_TRAIN = 256 * 39    # fewer vectors than this cannot train 256 PQ centroids well: exact search
SAMPLE_BLOCKS = 64      # 4 KiB blocks of a vector file hashed at every load (see `sample_digest`)
BLOCK = 4096


@dataclass(frozen=True)
class Plan:
    """IVF-PQ parameters for `n` vectors of `dim` dimensions."""
    nlist: int
    m: int
    nbits: int
    train_size: int

    @property
    def bytes_per_vector(self) -> int:
        return self.m * self.nbits // 8 + 8  # codes + the int64 id FAISS keeps per vector


def plan(n: int, dim: int) -> Plan | None:
    """The parameters `build` uses, or None when `n` is too small to train them (exact search).

    nlist ~ 4 sqrt(n) (the usual rule: lists of ~sqrt(n)/4 vectors), at most MAX_NLIST and
    at most one list per POINTS_PER_LIST vectors, so every list has training points; m is
    the largest divisor of `dim` with at least SUBVECTOR_DIMS dimensions per sub-quantizer.
    """
    if n < MIN_TRAIN:
        return None
    nlist = max(1, min(MAX_NLIST, int(4 * math.sqrt(n)), n // POINTS_PER_LIST))
    m = max(d for d in range(1, dim // SUBVECTOR_DIMS + 1) if dim % d == 0) if dim >= SUBVECTOR_DIMS else 1
    train = min(n, max(nlist * POINTS_PER_LIST, PQ_TRAIN))
    return Plan(nlist, m, NBITS, train)


def sample_rows(vectors, size: int, seed: int = 0) -> np.ndarray:
    """`size` distinct rows of `vectors`, drawn at random and read in file order (a memmap
    then reads forward), as one float32 array."""
    n = len(vectors)
    if size >= n:
        return np.concatenate([np.asarray(vectors[s:s + CHUNK], dtype=np.float32) for s in range(0, n, CHUNK)])
    picks = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    out = np.empty((size, vectors.shape[1]), dtype=np.float32)
    for s in range(0, size, CHUNK):
        out[s:s + CHUNK] = vectors[picks[s:s + CHUNK]]
    return out


def add_rows(index, vectors) -> None:
    """Add `vectors` (any array-like that slices to rows: a memmap too) to a FAISS index
    CHUNK rows at a time, so they are never all copied into memory at once."""
    for s in range(0, len(vectors), CHUNK):
        index.add(np.ascontiguousarray(vectors[s:s + CHUNK], dtype=np.float32))


def build(vectors, log=None):
    """(FAISS index, manifest parameters) for `vectors`: trained IVF-PQ, or exact flat when
    there are too few to train. `vectors` is read CHUNK rows at a time."""
    import faiss

    n, dim = len(vectors), vectors.shape[1]
    p = plan(n, dim)
    if p is None:
        index = faiss.IndexFlatIP(dim)
        add_rows(index, vectors)
        return index, {"kind": "flat", "fallback": f"{n:,} vectors: fewer than the {MIN_TRAIN:,} that IVF-PQ "
                                                   f"training needs, so this language has an exact flat index"}
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, p.nlist, p.m, p.nbits)
    # PQ codes of the vectors themselves, not of their residuals to the list centre: residual
    # codes are more precise, but a search then needs a distance table per list probed
    # (measured at 10^5: 5-10x slower per query) or a precomputed nlist x m x 256 table (268 MB
    # at nlist 4096, more than the codes of 10^6 vectors). The exact re-rank makes up the
    # precision: recall@10 was the same at rerank 200 (0.992 vs 0.992, nprobe 16).
    index.by_residual = False
    index.use_precomputed_table = -1
    index.pq.cp.max_points_per_centroid = PQ_TRAIN // (1 << p.nbits)
    index.pq.cp.niter = PQ_ITERATIONS
    sample = sample_rows(vectors, p.train_size)
    if log:
        log(f"    training IVF-PQ (nlist {p.nlist}, m {p.m}) on {len(sample):,} of {n:,} vectors")
    index.train(sample)
    norms = np.linalg.norm(sample[:CHUNK], axis=1)
    del sample
    add_rows(index, vectors)
    return index, {"kind": "ivfpq", "ivfpq": {**asdict(p), "metric": "L2 on unit vectors, exact inner-product re-rank",
                                              "bytes_per_vector": p.bytes_per_vector,
                                              "sample_norms": [round(float(norms.min()), 4), round(float(norms.max()), 4)]}}


# ---------------------------------------------------------------- the vector file

class _HashingWriter:
    """A binary file that hashes what is written to it (the sha256 comes for free, no re-read)."""

    def __init__(self, fh):
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.fh.write(data)


def write_vectors(vectors, path: Path) -> dict:
    """Write `vectors` as a float32 `.npy` at `path`, CHUNK rows at a time; returns its
    sha256 (of the whole file) and `sample_digest`, for the manifest."""
    path = Path(path)
    n, dim = len(vectors), vectors.shape[1]
    with open(path, "wb") as fh:
        out = _HashingWriter(fh)
        np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        for s in range(0, n, CHUNK):
            out.write(np.ascontiguousarray(vectors[s:s + CHUNK], dtype="<f4").tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    return {"sha256": out.sha.hexdigest(), "sample_sha256": sample_digest(path)}


def sample_digest(path: Path) -> str:
    """sha256 of the file's size, its first 64 KiB (the header and first rows), its last
    block and SAMPLE_BLOCKS blocks spread evenly between: ~0.3 MB read whatever the size.

    Why not the whole file at every load: 10^7 384-d vectors are 15 GB, minutes of hashing
    before the first query. This catches what happens to files in practice (truncation, a
    file from another build or language swapped in, a partial copy, a zeroed tail); a flipped
    bit inside an unsampled row is left to the full sha256, checked on demand
    (`load_collection(verify="full")`, `python -m indexes.build --verify`).
    """
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(16 * BLOCK))
        for i in range(SAMPLE_BLOCKS + 1):
            fh.seek(max(0, (size - BLOCK) * i // SAMPLE_BLOCKS))
            h.update(fh.read(BLOCK))
    return h.hexdigest()


def check_vectors(path: Path, count: int, dim: int, sample_sha256: str | None) -> np.ndarray:
    """The vector file opened memory-mapped, after checking its header (float32, `count` x
    `dim`, C order), its exact size and its `sample_digest`; ValueError says what is wrong."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:  # a cut header, or a file shorter than it says
        raise ValueError(f"is not a readable .npy vector file ({err})") from err
    expected = arr.offset + count * dim * 4
    if arr.dtype != np.dtype("<f4") or arr.shape != (count, dim) or not arr.flags.c_contiguous:
        raise ValueError(f"holds {arr.dtype} {arr.shape}, not float32 ({count}, {dim})")
    if os.path.getsize(path) != expected:
        raise ValueError(f"is {os.path.getsize(path):,} bytes, not the {expected:,} its header implies")
    if sample_digest(path) != sample_sha256:
        raise ValueError("does not match its manifest's sampled checksum")
    return arr


# ---------------------------------------------------------------- searching

class CompressedIndex:
    """An IVF-PQ index and its memory-mapped vectors, searched with an exact re-rank.

    It answers the calls `store.Collection` makes of a FAISS index (`search`, `reconstruct`,
    `ntotal`, `d`), so the rest of the project needs no branch for it.
    """

    def __init__(self, index, vectors: np.ndarray, nprobe: int, rerank: int):
        import faiss

        self.index, self.vectors = index, vectors
        self.ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        self.nprobe, self.rerank = max(1, int(nprobe)), max(1, int(rerank))
        self.ivf.nprobe = min(self.nprobe, self.ivf.nlist)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def d(self) -> int:
        return self.index.d

    def reconstruct(self, position: int) -> np.ndarray:
        return np.array(self.vectors[int(position)], dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (inner products, positions) per query, -1 / -FLT_MAX padded like FAISS."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, cands = self.index.search(queries, max(k, self.rerank))
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        # One sorted read of every candidate row of the batch (a memmap reads forward).
        rows, inverse = np.unique(cands[cands >= 0], return_inverse=True)
        if not len(rows):
            return scores, positions
        block = np.asarray(self.vectors[rows], dtype=np.float32)
        where = np.full(cands.shape, -1, dtype=np.int64)
        where[cands >= 0] = inverse
        for q, row in enumerate(where):
            valid = row[row >= 0]
            exact = block[valid] @ queries[q]
            top = np.argsort(-exact, kind="stable")[:k]
            scores[q, :len(top)], positions[q, :len(top)] = exact[top], rows[valid[top]]
        return scores, positions


def read_index(path: Path):
    """A FAISS index file; an IVF-PQ one without its precomputed distance table (see `build`)."""
    import faiss

    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.use_precomputed_table = -1
    return index


def open_index(index, vectors: np.ndarray, nprobe: int, rerank: int) -> CompressedIndex:
    if index.ntotal != len(vectors):
        raise ValueError(f"the index holds {index.ntotal} vectors but the vector file {len(vectors)}")
    return CompressedIndex(index, vectors, nprobe, rerank)
