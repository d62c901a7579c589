"""Your own documents as a collection, ingested as a stream: `python -m indexes.build
--collection jsonl:PATH` (one {"id", "lang", "title", "text"} object per line).

Documents are read one at a time, cut into ~100-word passages that keep the document's id
and title, embedded in length-sorted batches and written in chunks to a work folder beside
the index (`<index>.ingest/`), so the build holds one chunk of passages at a time however
large the file is. After each chunk the work folder records how far into the file it got:
a killed build resumes there. When the file is done, each language's vectors are assembled
on disk and the store writes the index (manifest, checksums, atomic swap, as for every
collection).

`--add PATH` ingests another file into the collection: only documents it does not hold yet
(by language and id) are embedded, and the index is re-assembled from the stored vectors.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from crosearch_agent import store
from crosearch_agent.store import Passage

STATE = "state.json"
CHUNK_PASSAGES = 2048  # passages embedded and written at a time: what the build holds in memory


@dataclass
class Source:
    """One ingested file and how far into it the stored chunks reach."""
    path: str
    size: int
    offset: int = 0          # bytes read into chunks so far
    documents: int = 0
    passages: int = 0
    duplicates: int = 0      # documents skipped: that language and id were already in

    @property
    def done(self) -> bool:
        return self.offset >= self.size


@dataclass
class State:
    embedder: str
    dim: int
    sources: list[Source] = field(default_factory=list)
    languages: list[str] | None = None   # the languages kept (None: every language in the files)
    chunks: int = 0
    counts: dict[str, int] = field(default_factory=dict)   # passages per language

    @classmethod
    def read(cls, folder: Path) -> State | None:
        try:
            raw = json.loads((folder / STATE).read_text(encoding="utf-8"))
            return cls(raw["embedder"], raw["dim"], [Source(**s) for s in raw["sources"]], raw["languages"],
                       raw["chunks"], raw["counts"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, folder: Path) -> None:
        _replace(folder / STATE, json.dumps(asdict(self), indent=1).encode())


def work_dir(dest: Path) -> Path:
    return dest.with_name(dest.name + ".ingest")


def _kept(dest: Path, state: State, index_type: str, collection: str, log) -> bool:
    """Whether a finished ingest's index is up to date and loads (a damaged one is rebuilt from
    the stored chunks)."""
    return all(s.done for s in state.sources) and store.up_to_date(
        dest, _inputs_hash(state, index_type), state.embedder, collection, log)


def ingest(collection: str, languages=None, embedder=None, embedder_id: str | None = None, index_type: str = "flat",
           add: str | None = None, home: Path | None = None, force: bool = False,
           chunk_passages: int = CHUNK_PASSAGES, log=print) -> Path:
    """Ingest `jsonl:PATH` (or, with `add`, another file into it) and write its index; returns
    the collection's folder. Resumes an interrupted ingest of the same file and languages."""
    languages = sorted(languages) if languages else None
    path = Path(collection[len("jsonl:"):]).expanduser()
    dest = store.collection_dir(collection, home)
    work = work_dir(dest)
    state = State.read(work)
    if add is None:
        if force or state is None or not _same_file(state.sources[0], _source(path)) or state.languages != languages:
            if state is not None:
                log(f"{path} changed since its ingest (or --force): starting over")
            state = None
    else:
        if state is None:
            raise ValueError(f"nothing to add to: '{collection}' was not ingested here yet; build it first with "
                             f"python -m indexes.build --collection {collection}")
        new = _source(Path(add).expanduser())
        if not any(_same_file(s, new) for s in state.sources):
            state.sources.append(new)
    from crosearch_agent.config import BUNDLED_EMBEDDER
    from crosearch_agent.embedder import Embedder, identity

    wanted = embedder.id if embedder is not None else identity(embedder_id or BUNDLED_EMBEDDER)
    if state is not None and state.embedder == wanted and _kept(dest, state, index_type, collection, log):
        return dest  # up to date: no embedder loaded (seconds, a GB of memory)
    if embedder is None:
        embedder = Embedder(embedder_id) if embedder_id else Embedder()
    if state is None:
        _clear(work)
        state = State(embedder.id, embedder.dim, [_source(path)], languages)
    if state.embedder != embedder.id:
        raise ValueError(f"'{collection}' was ingested with embedder {state.embedder}, not {embedder.id}; "
                         f"use --force to start over with the new one")
    (work / "chunks").mkdir(parents=True, exist_ok=True)
    state.write(work)

    t0 = time.perf_counter()
    embedded = 0
    for source in state.sources:
        embedded += _stream(source, state, work, embedder, chunk_passages, log)
    embed_s = time.perf_counter() - t0
    if not sum(state.counts.values()):
        raise ValueError(f"{path} holds no documents with text")
    vectors = _assemble(state, work)
    passages = {lang: _Passages(work, state.chunks, lang, n) for lang, n in state.counts.items()}
    built = store.write_collection(dest, passages, vectors, embedder_id=state.embedder, dim=state.dim,
                                   index_type=index_type, inputs_hash=_inputs_hash(state, index_type), extra={
                                       "collection": collection, "sources": [asdict(s) for s in state.sources],
                                       "build": {"seconds": round(time.perf_counter() - t0, 2), "embed_s": round(embed_s, 2),
                                                 "embedded_now": embedded,
                                                 "passages_per_s": round(embedded / max(embed_s, 1e-9), 1)}})
    for lang in vectors:
        (work / f"{lang}.npy").unlink(missing_ok=True)  # the chunks keep the vectors for --add
    log(f"built '{collection}': {sum(state.counts.values())} passages in {len(state.counts)} languages "
        f"({embedded} embedded now) -> {built}")
    return built


# ---------------------------------------------------------------- reading and embedding

def _stream(source: Source, state: State, work: Path, embedder, chunk_passages: int, log) -> int:
    """Read `source` from its offset, embedding and writing a chunk every `chunk_passages`
    passages; returns how many passages it embedded."""
    from indexes.corpora import chunk

    if source.done:
        return 0
    seen = _documents(work, state.chunks)
    buffer: list[Passage] = []
    t0, embedded, start = time.perf_counter(), 0, source.offset
    with open(source.path, "rb") as fh:
        fh.seek(source.offset)
        for raw in iter(fh.readline, b""):
            doc = _document(raw, source.path, source.offset)
            source.offset += len(raw)
            if doc is None:
                continue
            doc_id, lang, title, text = doc
            if state.languages and lang not in state.languages:
                continue
            if (lang, doc_id) in seen:
                source.duplicates += 1
                continue
            seen.add((lang, doc_id))
            pieces = chunk(text, lang)
            buffer += [Passage(f"jsonl/{lang}/{doc_id}/{c}", lang, title, piece, doc_id, c, Path(source.path).stem)
                       for c, piece in enumerate(pieces)]
            source.documents += 1 if pieces else 0
            if len(buffer) >= chunk_passages:
                embedded += _flush(buffer, source, state, work, embedder)
                buffer = []
                spent = time.perf_counter() - t0
                left = (source.size - source.offset) / max(source.offset - start, 1) * spent
                log(f"  {Path(source.path).name}: {source.offset / max(source.size, 1):.0%}, {source.passages} passages, "
                    f"{embedded / spent:.1f} passages/s, about {left / 60:.1f} min left")
    embedded += _flush(buffer, source, state, work, embedder)
    return embedded


def _document(raw: bytes, path: str, offset: int) -> tuple[str, str, str, str] | None:
    line = raw.decode("utf-8", errors="replace").strip()
    if not line:
        return None
    try:
        rec = json.loads(line)
        doc_id, lang, title, text = str(rec["id"]), str(rec["lang"]), str(rec.get("title") or ""), rec["text"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} (byte {offset}): expected a JSON object with id, lang, title, text ({err})") from err
    return (doc_id, lang, title, text) if isinstance(text, str) and text.strip() else None


def _flush(buffer: list[Passage], source: Source, state: State, work: Path, embedder) -> int:
    """Embed and write one chunk, then record it (the state is written last: a kill before it
    leaves a chunk the resumed run overwrites)."""
    name = f"{state.chunks:06d}"
    if buffer:
        vectors = embedder.encode_passages([p.text for p in buffer], progress=False)
        _replace(work / "chunks" / f"{name}.jsonl",
                 "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in buffer).encode())
        _save(work / "chunks" / f"{name}.npy", vectors)
        state.chunks += 1
        for p in buffer:
            state.counts[p.lang] = state.counts.get(p.lang, 0) + 1
        source.passages += len(buffer)
    state.write(work)
    return len(buffer)


def _documents(work: Path, chunks: int) -> set[tuple[str, str]]:
    """(language, document id) of everything the stored chunks hold."""
    out = set()
    for path in _chunk_files(work, chunks, "jsonl"):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                p = json.loads(line)
                out.add((p["lang"], p["doc_id"]))
    return out


# ---------------------------------------------------------------- assembling the index

def _assemble(state: State, work: Path) -> dict[str, np.ndarray]:
    """Each language's vectors, in passage order, in a file on disk (memory-mapped)."""
    out = {lang: np.lib.format.open_memmap(work / f"{lang}.npy", mode="w+", dtype=np.float32, shape=(n, state.dim))
           for lang, n in state.counts.items()}
    filled = dict.fromkeys(out, 0)
    for jsonl, npy in zip(_chunk_files(work, state.chunks, "jsonl"), _chunk_files(work, state.chunks, "npy")):
        vectors = np.load(npy, mmap_mode="r")
        with open(jsonl, encoding="utf-8") as fh:
            langs = [json.loads(line)["lang"] for line in fh]
        for lang in set(langs):
            rows = [i for i, l in enumerate(langs) if l == lang]
            out[lang][filled[lang]:filled[lang] + len(rows)] = vectors[rows]
            filled[lang] += len(rows)
    for lang, memmap in out.items():
        memmap.flush()
        out[lang] = np.load(work / f"{lang}.npy", mmap_mode="r")
    return out


class _Passages:
    """One language's passages, read from the chunks when iterated (never all in memory)."""

    def __init__(self, work: Path, chunks: int, lang: str, count: int):
        self.work, self.chunks, self.lang, self.count = work, chunks, lang, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for path in _chunk_files(self.work, self.chunks, "jsonl"):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    p = json.loads(line)
                    if p["lang"] == self.lang:
                        yield Passage(**p)


def _chunk_files(work: Path, chunks: int, ext: str) -> list[Path]:
    return [work / "chunks" / f"{i:06d}.{ext}" for i in range(chunks)]


# ---------------------------------------------------------------- files

def _source(path: Path) -> Source:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return Source(str(path.resolve()), path.stat().st_size)


def _same_file(stored: Source, now: Source) -> bool:
    return stored.path == now.path and stored.size == now.size


def _inputs_hash(state: State, index_type: str) -> str:
    what = {"embedder": state.embedder, "index_type": index_type, "format": store.FORMAT, "chunks": state.chunks,
            "languages": state.languages,
            "sources": [(s.path, s.size, s.offset) for s in state.sources]}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _clear(work: Path) -> None:
    import shutil

    shutil.rmtree(work, ignore_errors=True)
