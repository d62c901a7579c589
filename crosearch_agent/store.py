"""Per-language FAISS indexes on disk, with a manifest that makes loading safe.

A collection folder holds, for each language, `<lang>.faiss` (the vectors) and
`<lang>.jsonl` (one passage per line, in index order), plus `manifest.json`: the
embedder that made the vectors, its dimension, the passage counts, a sha256 of every
file and how long the build took. The folder is written beside its final place and
renamed into it in one step, so a crashed build never leaves a half index that loads;
loading re-checks every hash and the embedder, and refuses anything that does not match.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from crosearch_agent.config import data_home

MANIFEST = "manifest.json"
FORMAT = 1
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 200, 128


class StoreError(RuntimeError):
    """An index is missing, corrupt, or was built for another embedder."""


@dataclass(frozen=True)
class Passage:
    id: str          # unique in the collection, e.g. "xquad/de/Super_Bowl_50/3/0"
    lang: str
    title: str
    text: str
    doc_id: str      # source key shared by translations: "Super_Bowl_50/3" (title/paragraph)
    chunk: int = 0   # position of this piece within its source paragraph
    source: str = "" # data set name


def collection_dir(collection: str, home: Path | None = None) -> Path:
    return (home or data_home()) / "indexes" / collection.replace("/", "_")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def make_index(vectors: np.ndarray, index_type: str = "flat"):
    """Inner-product index over normalised vectors: exact, or HNSW for large collections."""
    import faiss

    dim = vectors.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"unknown index type {index_type!r} (use 'flat' or 'hnsw')")
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def write_collection(dest: Path, passages: dict[str, list[Passage]], vectors: dict[str, np.ndarray], *,
                     embedder_id: str, dim: int, index_type: str, inputs_hash: str, extra: dict | None = None) -> Path:
    """Write every language's index and passages, then the manifest, then move into place."""
    import faiss

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        langs = {}
        for lang in sorted(passages):
            vecs = vectors[lang]
            if len(vecs) != len(passages[lang]):
                raise StoreError(f"{lang}: {len(vecs)} vectors for {len(passages[lang])} passages")
            faiss.write_index(make_index(vecs, index_type), str(tmp / f"{lang}.faiss"))
            with open(tmp / f"{lang}.jsonl", "w", encoding="utf-8") as fh:
                for p in passages[lang]:
                    fh.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
            langs[lang] = {"count": len(passages[lang]), "index": f"{lang}.faiss", "passages": f"{lang}.jsonl"}
        files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        manifest = {
            "format": FORMAT,
            "embedder": {"id": embedder_id, "dim": dim},
            "index_type": index_type,
            "languages": langs,
            "passages": sum(v["count"] for v in langs.values()),
            "files": files,
            "inputs_hash": inputs_hash,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(extra or {}),
        }
        _write_json_synced(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _write_json_synced(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())


def _swap_into_place(tmp: Path, dest: Path) -> None:
    # rename() of a folder is atomic but cannot replace a non-empty one: move the old
    # folder aside first. In between, loaders see "missing", never a mix of old and new.
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Collection:
    """A loaded collection: one FAISS index and passage list per language."""

    def __init__(self, folder: Path, manifest: dict, indexes: dict, passages: dict[str, list[Passage]]):
        self.folder, self.manifest, self.indexes, self.passages = folder, manifest, indexes, passages

    @property
    def languages(self) -> list[str]:
        return sorted(self.indexes)

    @property
    def embedder_id(self) -> str:
        return self.manifest["embedder"]["id"]

    def search(self, lang: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, positions) in one language for a batch of query vectors; -1 pads."""
        index = self.indexes[lang]
        return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, max(index.ntotal, 1)))

    def vector(self, lang: str, position: int) -> np.ndarray:
        """The stored (normalised) vector of one passage, for cross-language alignment."""
        return self.indexes[lang].reconstruct(int(position))


def load_collection(folder: Path, embedder_id: str | None = None, languages=None, verify: bool = True) -> Collection:
    """Load a collection, refusing (with a clear message) a missing, corrupt or mismatched one."""
    import faiss

    folder = Path(folder)
    name = folder.name
    manifest = read_manifest(folder)
    if manifest is None:
        hint = f"build it with: python -m indexes.build --collection {name}"
        if folder.exists():
            raise StoreError(f"index '{name}' at {folder} has no readable manifest (interrupted or corrupt build); {hint}")
        raise StoreError(f"no index for collection '{name}' (looked in {folder}); {hint}")
    if manifest.get("format") != FORMAT:
        raise StoreError(f"index '{name}' has format {manifest.get('format')}, this version reads {FORMAT}; rebuild it")
    built_with = manifest["embedder"]["id"]
    if embedder_id is not None and built_with != embedder_id:
        raise StoreError(f"index '{name}' was built with embedder '{built_with}', but '{embedder_id}' was asked for: "
                         f"vectors from different embedders are not comparable. Rebuild with: "
                         f"python -m indexes.build --collection {name} --embedder {embedder_id}")
    wanted = sorted(manifest["languages"]) if languages is None else [l for l in languages if l in manifest["languages"]]
    indexes, passages = {}, {}
    for lang in wanted:
        entry = manifest["languages"][lang]
        for key in ("index", "passages"):
            path = folder / entry[key]
            if not path.exists():
                raise StoreError(f"index '{name}' is missing {entry[key]}; rebuild it")
            if verify and sha256_file(path) != manifest["files"].get(entry[key]):
                raise StoreError(f"index '{name}': {entry[key]} does not match its manifest checksum "
                                 f"(corrupt or swapped file); rebuild with: python -m indexes.build --collection {name} --force")
        try:
            indexes[lang] = faiss.read_index(str(folder / entry["index"]))
        except RuntimeError as err:
            raise StoreError(f"index '{name}': cannot read {entry['index']}: {err}") from err
        if isinstance(indexes[lang], faiss.IndexHNSW):
            indexes[lang].hnsw.efSearch = HNSW_EF_SEARCH
        with open(folder / entry["passages"], encoding="utf-8") as fh:
            passages[lang] = [Passage(**json.loads(line)) for line in fh]
        if indexes[lang].ntotal != len(passages[lang]) or indexes[lang].d != manifest["embedder"]["dim"]:
            raise StoreError(f"index '{name}' ({lang}): vectors and passages disagree; rebuild it")
    return Collection(folder, manifest, indexes, passages)
