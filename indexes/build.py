"""`python -m indexes.build --collection NAME`: embed a collection, one FAISS index per language.

A rebuild with the same inputs (passages, embedder, index type) is skipped; `--force`
rebuilds anyway. The write is atomic (see crosearch_agent.store).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from crosearch_agent import store
from crosearch_agent.config import Settings
from crosearch_agent.qa_data import DataNotFound
from indexes.corpora import load_collection_passages
from indexes.ingest import CHUNK_PASSAGES, ingest


def inputs_hash(passages: dict, embedder_id: str, index_type: str) -> str:
    """Everything that determines the index's content, hashed."""
    h = hashlib.sha256(json.dumps({"embedder": embedder_id, "index_type": index_type, "format": store.FORMAT}).encode())
    for lang in sorted(passages):
        for p in passages[lang]:
            h.update(f"\x1e{p.id}\x1f{p.title}\x1f{p.text}".encode("utf-8"))
    return h.hexdigest()


def build(collection: str, languages=None, embedder: str | None = None, index_type: str = "flat",
          data_dir=None, home: Path | None = None, force: bool = False, log=print,
          chunk_passages: int = CHUNK_PASSAGES) -> Path:
    """Build (or find up to date) the indexes of `collection`; returns its folder. A file of
    your own (`jsonl:PATH`) is ingested as a stream (indexes.ingest)."""
    embedder = embedder or Settings.embedder
    if collection.startswith("jsonl:") and "+" not in collection:
        return ingest(collection, languages, embedder_id=embedder, index_type=index_type, home=home, force=force, log=log,
                      chunk_passages=chunk_passages)
    dest = store.collection_dir(collection, home)
    passages = load_collection_passages(collection, languages, data_dir)
    if not passages:
        raise ValueError(f"collection {collection!r} has no passages in languages {languages}")
    digest = inputs_hash(passages, embedder, index_type)
    if not force and store.up_to_date(dest, digest, embedder, collection, log):
        return dest

    from crosearch_agent.embedder import Embedder

    total = sum(len(v) for v in passages.values())
    log(f"building index '{collection}': {total} passages in {len(passages)} languages, embedder {embedder}, {index_type}")
    t0 = time.perf_counter()
    model = Embedder(embedder)
    t_model = time.perf_counter() - t0
    vectors = {}
    for lang in sorted(passages):
        log(f"  {lang}: {len(passages[lang])} passages")
        # Text only: XQuAD keeps English titles in every language, which would give
        # translations a shared English anchor that real collections do not have.
        vectors[lang] = model.encode_passages([p.text for p in passages[lang]], progress=len(passages[lang]) >= 64)
    t_embed = time.perf_counter() - t0 - t_model
    store.write_collection(dest, passages, vectors, embedder_id=model.id, dim=model.dim, index_type=index_type,
                           inputs_hash=digest, extra={"collection": collection, "build": {
                               "seconds": round(time.perf_counter() - t0, 2), "model_load_s": round(t_model, 2),
                               "embed_s": round(t_embed, 2), "passages_per_s": round(total / max(t_embed, 1e-9), 1)}})
    log(f"built '{collection}' in {time.perf_counter() - t0:.1f} s ({total / max(t_embed, 1e-9):.0f} passages/s) -> {dest}")
    return dest


def verify(collection: str, home: Path | None = None, log=print) -> int:
    """Check a built collection file by file against its full checksums (StoreError names a bad one)."""
    dest = store.collection_dir(collection, home)
    t0 = time.perf_counter()
    loaded = store.load_collection(dest, verify="full")
    log(f"index '{collection}' is intact: its {len(loaded.manifest['files'])} files match their sha256 "
        f"({time.perf_counter() - t0:.1f} s) at {dest}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexes.build", description=__doc__.splitlines()[0])
    Settings.add_arguments(parser, only=["collection", "languages", "embedder", "index_type", "data_dir"])
    parser.add_argument("--force", action="store_true", help="rebuild even when the index is up to date")
    parser.add_argument("--chunk-passages", type=int, default=CHUNK_PASSAGES,
                        help="jsonl:PATH: passages embedded and written at a time, what the build holds in memory "
                             "(default: %(default)s)")
    parser.add_argument("--verify", action="store_true",
                        help="only check the built index: every file against its full sha256, the memory-mapped vector "
                             "files of ivfpq indexes included (a load checks those by size, header and sampled blocks)")
    parser.add_argument("--add", metavar="PATH", default=None,
                        help="add the documents of another JSONL file to the jsonl:PATH collection (only new ones are embedded)")
    args = parser.parse_args(argv)
    try:
        if args.verify:
            return verify(args.collection)
        if args.add:
            if not args.collection.startswith("jsonl:") or "+" in args.collection:
                raise ValueError("--add adds to a collection of your own documents: --collection jsonl:PATH")
            ingest(args.collection, args.languages, embedder_id=args.embedder, index_type=args.index_type, add=args.add,
                   chunk_passages=args.chunk_passages)
        else:
            build(args.collection, args.languages, args.embedder, args.index_type, args.data_dir, force=args.force,
                  chunk_passages=args.chunk_passages)
    except (ValueError, store.StoreError, DataNotFound, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
