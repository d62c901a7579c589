"""Per-language FAISS indexes on disk, with a manifest that makes loading safe.

A collection folder holds, for each language, `<lang>.faiss` (the vectors) and
`<lang>.jsonl` (one passage per line, in index order), plus `manifest.json`: the
embedder that made the vectors, its dimension, the passage counts, a sha256 of every
file and how long the build took. The folder is written beside its final place and
renamed into it in one step, so a crashed build never leaves a half index that loads;
loading re-checks every hash and the embedder, and refuses anything that does not match.

Index types: `flat` (exact), `hnsw` (a graph over the vectors) and `ivfpq`
(`crosearch_agent.compressed`: PQ codes in memory plus `<lang>.npy`, the full vectors,
memory-mapped for an exact re-rank). A vector file can be 15 GB, so a load checks it by
size, header and a sampled checksum; its full sha256 is in the manifest too, checked with
`verify="full"`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from crosearch_agent import compressed
from crosearch_agent.config import Settings, data_home
from crosearch_agent.folders import write_folder

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
        raise ValueError(f"unknown index type {index_type!r} (use 'flat' or 'hnsw'; 'ivfpq' is built by "
                         f"compressed.build)")
    compressed.add_rows(index, vectors)  # vectors on disk (a streaming ingest's memmap) in slices
    return index


def write_collection(dest: Path, passages: dict[str, list[Passage]], vectors: dict[str, np.ndarray], *,
                     embedder_id: str, dim: int, index_type: str, inputs_hash: str, extra: dict | None = None) -> Path:
    """Write every language's index and passages, then the manifest, then move into place.

    A failed write (disk full, quota) raises OSError naming the index and leaves the
    previous index as it was. For `ivfpq`, a language's vectors may be an `np.memmap` (or
    any array-like that slices to rows): they are read in chunks, never all at once.
    """
    dest = Path(dest)

    def write(tmp: Path) -> None:
        langs, hashed = {}, {}
        for lang in sorted(passages):
            vecs = vectors[lang]
            if len(vecs) != len(passages[lang]):
                raise StoreError(f"{lang}: {len(vecs)} vectors for {len(passages[lang])} passages")
            entry = {"count": len(passages[lang]), "index": f"{lang}.faiss", "passages": f"{lang}.jsonl"}
            if index_type == "ivfpq":
                index, params = compressed.build(vecs)
                entry.update(params)
                if params["kind"] == "ivfpq":  # else too few vectors: an exact flat index, no vector file
                    entry["vectors"] = f"{lang}.npy"
                    written = compressed.write_vectors(vecs, tmp / entry["vectors"])
                    hashed[entry["vectors"]] = written["sha256"]  # hashed while written: no second 15 GB read
                    entry["vectors_sample_sha256"] = written["sample_sha256"]
            else:
                index = make_index(vecs, index_type)
            _write_index(index, tmp / entry["index"])
            del index
            with open(tmp / f"{lang}.jsonl", "w", encoding="utf-8") as fh:
                for p in passages[lang]:
                    fh.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
            langs[lang] = entry
        files = {f.name: hashed.get(f.name) or sha256_file(f) for f in sorted(tmp.iterdir())}
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

    try:
        return write_folder(dest, write)
    except OSError as err:
        message = f"could not write index '{dest.name}': {err.strerror or err}; the previous index is unchanged"
        raise (OSError(err.errno, message) if err.errno is not None else OSError(message)) from err


def _write_index(index, path: Path) -> None:
    import faiss

    try:
        faiss.write_index(index, str(path))
    except RuntimeError as err:
        # faiss reports a short write (disk full, file too large) as a RuntimeError whose
        # last words are the OS reason, e.g. "... 4096 != 65536 (No space left on device)".
        text = str(err)
        reason = text[text.rfind("(") + 1:-1] if text.endswith(")") and "(" in text else text
        raise OSError(f"writing {path.name} failed ({reason})") from err


def _write_json_synced(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())


def read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def up_to_date(folder: Path, inputs_hash: str, embedder_id: str | None, name: str, log=print) -> bool:
    """Whether the index at `folder` can be kept: built from `inputs_hash` and loading cleanly.
    Says so, or why a damaged one (built from these inputs, not loading) is rebuilt."""
    manifest = read_manifest(folder)
    if not manifest or manifest.get("inputs_hash") != inputs_hash:
        return False
    try:
        load_collection(folder, embedder_id)
    except StoreError as err:
        log(f"rebuilding index '{name}': {err}")
        return False
    log(f"index '{name}' is up to date ({manifest['passages']} passages) at {folder}")
    return True


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


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a manifest's shape (hand-edited, or from a broken writer), if anything."""
    embedder, langs, files = manifest.get("embedder"), manifest.get("languages"), manifest.get("files")
    if not isinstance(embedder, dict) or not isinstance(embedder.get("id"), str) or not isinstance(embedder.get("dim"), int):
        return "no embedder id and dimension"
    if not isinstance(langs, dict) or not isinstance(files, dict):
        return "no language or file table"
    for lang, entry in langs.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("count"), int):
            return f"a malformed entry for language {lang!r}"
        for key in ("index", "passages") + (("vectors",) if "vectors" in entry else ()):
            value = entry.get(key)
            # Plain names inside the folder only: a manifest must not point a loader elsewhere.
            if not isinstance(value, str) or not value or value != Path(value).name or value.startswith("."):
                return f"a bad {key} file name for language {lang!r}"
    return None


def _siblings(folder: Path) -> list[Path]:
    try:
        return list(folder.parent.iterdir())
    except OSError:
        return []


def _identity(folder: Path) -> tuple | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def load_collection(folder: Path, embedder_id: str | None = None, languages=None, verify: bool | str = True,
                    nprobe: int | None = None, rerank: int | None = None) -> Collection:
    """Load a collection, refusing (with a clear message) a missing, corrupt or mismatched one.

    `verify`: True checks every file against its manifest sha256, except the memory-mapped
    vector files of `ivfpq` indexes, which are checked by size, header and a sampled
    checksum (`compressed.sample_digest`: hashing 15 GB would take minutes); "full" hashes
    those too; False checks shapes and sizes only. `nprobe` and `rerank` set how `ivfpq`
    indexes search (default: `Settings`).

    A rebuild swaps a whole new folder into place while this may be reading: a load
    during which the folder changed is thrown away and done again, so the files loaded
    always come from one folder (never old vectors with new passages).
    """
    folder = Path(folder)
    for attempt in range(5):
        if attempt:
            time.sleep(0.02 * attempt)  # let a burst of swaps settle before reading again
        before = _identity(folder)
        if before is None and any(p.name.startswith(f".{folder.name}.old-") for p in _siblings(folder)):
            continue  # between the two renames of a swap: the new folder is a moment away
        try:
            collection = _load_once(folder, embedder_id, languages, verify, nprobe, rerank)
        except StoreError:
            if _identity(folder) == before:
                raise
            continue
        if _identity(folder) == before:
            return collection
    if _identity(folder) is None:
        return _load_once(folder, embedder_id, languages, verify, nprobe, rerank)  # the clear "no index" message
    raise StoreError(f"index '{folder.name}' kept changing while it was being loaded (is it being rebuilt?); try again")


def _load_once(folder: Path, embedder_id: str | None, languages, verify, nprobe, rerank) -> Collection:
    import faiss

    name = folder.name
    rebuild = f"rebuild with: python -m indexes.build --collection {name} --force"
    manifest = read_manifest(folder)
    if manifest is None:
        hint = f"build it with: python -m indexes.build --collection {name}"
        if folder.exists():
            raise StoreError(f"index '{name}' at {folder} has no readable manifest (interrupted or corrupt build); {hint}")
        raise StoreError(f"no index for collection '{name}' (looked in {folder}); {hint}")
    if manifest.get("format") != FORMAT:
        raise StoreError(f"index '{name}' has format {manifest.get('format')}, this version reads {FORMAT}; rebuild it")
    problem = _manifest_problem(manifest)
    if problem:
        raise StoreError(f"index '{name}' has a malformed manifest ({problem}); {rebuild}")
    built_with = manifest["embedder"]["id"]
    if embedder_id is not None and built_with != embedder_id:
        raise StoreError(f"index '{name}' was built with embedder '{built_with}', but '{embedder_id}' was asked for: "
                         f"vectors from different embedders are not comparable. Rebuild with: "
                         f"python -m indexes.build --collection {name} --embedder {embedder_id}")
    wanted = sorted(manifest["languages"]) if languages is None else [l for l in languages if l in manifest["languages"]]
    indexes, passages = {}, {}
    for lang in wanted:
        entry = manifest["languages"][lang]
        index_file, passages_file, vectors_file = entry["index"], entry["passages"], entry.get("vectors")
        try:
            for file in (index_file, passages_file) + ((vectors_file,) if vectors_file else ()):
                path = folder / file
                if not path.exists():
                    raise StoreError(f"index '{name}' is missing {file}; rebuild it")
                if file == vectors_file and verify != "full":
                    continue  # checked by size, header and sampled checksum below
                if verify and sha256_file(path) != manifest["files"].get(file):
                    raise StoreError(f"index '{name}': {file} does not match its manifest checksum "
                                     f"(corrupt or swapped file); {rebuild}")
            try:
                indexes[lang] = (compressed.read_index if vectors_file else faiss.read_index)(str(folder / index_file))
            except RuntimeError as err:
                raise StoreError(f"index '{name}': {index_file} is unreadable (truncated, or not a FAISS index); {rebuild}") from err
            if isinstance(indexes[lang], faiss.IndexHNSW):
                indexes[lang].hnsw.efSearch = HNSW_EF_SEARCH
            if vectors_file:
                indexes[lang] = _open_compressed(folder, entry, indexes[lang], manifest["embedder"]["dim"],
                                                 nprobe, rerank, f"index '{name}'", rebuild)
            passages[lang] = _read_passages(folder / passages_file, lang, f"index '{name}'", rebuild)
        except OSError as err:  # the folder went away under us (a rebuild's swap) or a read failed
            raise StoreError(f"index '{name}': cannot read {folder.name}/{index_file}: {err.strerror or err}; {rebuild}") from err
        ntotal, dim = indexes[lang].ntotal, indexes[lang].d
        if ntotal != len(passages[lang]) or dim != manifest["embedder"]["dim"]:
            raise StoreError(f"index '{name}': {index_file} holds {ntotal} vectors of dimension {dim}, but {passages_file} "
                             f"{len(passages[lang])} passages and the manifest dimension {manifest['embedder']['dim']}; {rebuild}")
    return Collection(folder, manifest, indexes, passages)


def _open_compressed(folder: Path, entry: dict, index, dim: int, nprobe, rerank, what: str, rebuild: str):
    """An `ivfpq` language: its IVF-PQ index joined to its checked, memory-mapped vectors."""
    try:
        vectors = compressed.check_vectors(folder / entry["vectors"], entry["count"], dim, entry.get("vectors_sample_sha256"))
    except ValueError as err:
        raise StoreError(f"{what}: {entry['vectors']} {err} (corrupt, truncated or swapped vector file); {rebuild}") from err
    try:
        return compressed.open_index(index, vectors, Settings.nprobe if nprobe is None else nprobe,
                                     Settings.rerank if rerank is None else rerank)
    except (ValueError, RuntimeError) as err:  # not an IVF index, or not the vectors' count
        raise StoreError(f"{what}: {entry['index']} does not go with {entry['vectors']} ({err}); {rebuild}") from err


def _read_passages(path: Path, lang: str, what: str, rebuild: str) -> list[Passage]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                passage = Passage(**json.loads(line))
            except (ValueError, TypeError) as err:  # cut short, or not a passage record
                raise StoreError(f"{what}: line {number} of {path.name} is not a passage ({type(err).__name__}); {rebuild}") from err
            if passage.lang != lang:
                raise StoreError(f"{what}: {path.name} holds a '{passage.lang}' passage at line {number} "
                                 f"(a file swapped between languages?); {rebuild}")
            out.append(passage)
    return out
