"""Your own documents as a collection: a JSONL file ingested as a stream, in chunks, resumed
after a kill, added to without re-embedding what is in, and searchable (real embedder)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from crosearch_agent import compressed, store
from crosearch_agent.config import REPO_ROOT, Settings
from crosearch_agent.embedder import Embedder, length_sorted_batches
from crosearch_agent.retriever import load_retriever
from indexes import build, ingest

pytestmark = pytest.mark.slow

TOPICS = ["rivers", "volcanoes", "violins", "glaciers", "bees", "lighthouses", "comets", "tea", "bridges", "owls"]


def documents(n: int, start: int = 0, words: int = 30) -> list[dict]:
    """Short German and English documents on distinct topics; every fifth one long enough to
    be cut into several passages."""
    out = []
    for i in range(start, start + n):
        topic = TOPICS[i % len(TOPICS)]
        text = f"Document {i} is about {topic}. " + " ".join(f"{topic} fact {j} of document {i}." for j in range(words // 5))
        if i % 5 == 0:
            text = " ".join([text] * 8)  # ~200+ words: more than one passage
        out.append({"id": f"doc-{i}", "lang": "en" if i % 2 else "de", "title": f"On {topic} ({i})", "text": text})
    return out


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    return path


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def passage_ids(folder) -> list[str]:
    coll = store.load_collection(folder)
    return sorted(p.id for lang in coll.languages for p in coll.passages[lang])


def test_length_sorted_batches_stay_within_the_token_budget():
    lengths = [5, 300, 40, 41, 7, 512, 39, 6]
    batches = length_sorted_batches(lengths, 128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 128
    assert [5] in batches and [1] in batches  # the long ones alone, the short ones together


def test_length_sorted_encoding_gives_the_vectors_of_fixed_batches(embedder):
    texts = [d["text"] for d in documents(12)]
    np.testing.assert_allclose(embedder.encode_passages(texts), embedder.encode_passages(texts, token_budget=None),
                               atol=1e-5)


def test_a_file_is_ingested_in_chunks_into_a_searchable_index(tmp_path, embedder, monkeypatch):
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    source = write_jsonl(tmp_path / "docs.jsonl", documents(40))
    name = f"jsonl:{source}"
    logs = []
    folder = ingest.ingest(name, embedder=embedder, chunk_passages=16, log=logs.append)
    state = ingest.State.read(ingest.work_dir(folder))
    manifest = store.read_manifest(folder)
    assert state.chunks >= 3 and any("passages/s" in line and "min left" in line for line in logs)
    assert manifest["passages"] == sum(state.counts.values()) > 40  # long documents became several passages
    long_doc = [p for p in store.load_collection(folder).passages["de"] if p.doc_id == "doc-0"]
    assert len(long_doc) > 1 and {p.title for p in long_doc} == {"On rivers (0)"}
    retriever = load_retriever(Settings(collection=name), embedder)
    top = retriever.search("Document 17 is about comets.", ["de", "en"], k=1)[0]
    assert top.doc_ids == {"doc-17"}
    # the same file again: nothing to do, not even loading the embedder
    logs.clear()

    def no_loading(*_a, **_k):
        raise AssertionError("an up-to-date ingest loaded the embedder")

    monkeypatch.setattr("crosearch_agent.embedder.Embedder", no_loading)
    ingest.ingest(name, embedder_id=embedder.id, chunk_passages=16, log=logs.append)
    assert any("up to date" in line for line in logs)


def test_add_embeds_only_the_new_documents(tmp_path, embedder, monkeypatch):
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    name = f"jsonl:{write_jsonl(tmp_path / 'docs.jsonl', documents(20))}"
    folder = ingest.ingest(name, embedder=embedder, log=lambda *_: None)
    before = passage_ids(folder)
    more = documents(6, start=20) + documents(2, start=3)  # two documents it already holds
    ingest.ingest(name, embedder=embedder, add=str(write_jsonl(tmp_path / "more.jsonl", more)), log=lambda *_: None)
    manifest = store.read_manifest(folder)
    after = passage_ids(folder)
    new = [p for p in after if p not in before]
    assert set(before) <= set(after) and {p.split("/")[2] for p in new} == {f"doc-{i}" for i in range(20, 26)}
    assert manifest["build"]["embedded_now"] == len(new)
    assert manifest["sources"][1]["duplicates"] == 2
    retriever = load_retriever(Settings(collection=name), embedder)
    assert retriever.search("Document 24 is about bees.", ["de", "en"], k=1)[0].doc_ids == {"doc-24"}
    assert build.main(["--collection", "xquad-partial", "--add", str(tmp_path / "more.jsonl")]) == 1  # not a jsonl collection


def test_a_killed_ingest_resumes_where_it_stopped_and_ends_as_a_whole_one(tmp_path, embedder):
    home = tmp_path / "home"
    env = {**os.environ, "CROSEARCH_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    source = write_jsonl(tmp_path / "docs.jsonl", documents(120))
    name = f"jsonl:{source}"
    work = ingest.work_dir(store.collection_dir(name, home))
    proc = subprocess.Popen([sys.executable, "-m", "indexes.build", "--collection", name, "--chunk-passages", "16"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while (ingest.State.read(work) or ingest.State(embedder.id, 0)).chunks < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = ingest.State.read(work)
    assert not stopped.sources[0].done and store.read_manifest(store.collection_dir(name, home)) is None

    os.environ["CROSEARCH_HOME"] = str(home)
    try:
        folder = ingest.ingest(name, embedder=embedder, chunk_passages=16, log=lambda *_: None)
        resumed = store.read_manifest(folder)
        whole = ingest.ingest(f"jsonl:{write_jsonl(tmp_path / 'again.jsonl', documents(120))}", embedder=embedder,
                              log=lambda *_: None)
    finally:
        del os.environ["CROSEARCH_HOME"]
    # the resumed run embedded only what the killed one had not written, and nothing twice
    assert resumed["build"]["embedded_now"] == resumed["passages"] - sum(stopped.counts.values()) > 0
    assert [p.replace("again", "docs") for p in passage_ids(whole)] == passage_ids(folder)
    a, b = store.load_collection(folder), store.load_collection(whole)
    for lang in a.languages:
        np.testing.assert_allclose(a.indexes[lang].reconstruct_n(0, a.indexes[lang].ntotal),
                                   b.indexes[lang].reconstruct_n(0, b.indexes[lang].ntotal), atol=1e-5)


def test_the_build_holds_one_chunk_at_a_time_not_the_collection(tmp_path, embedder, monkeypatch):
    # The memory cap: what a chunked build allocates itself (Python objects and numpy arrays,
    # as tracemalloc sees them) must stay under half of the collection's text and vectors, and
    # under a quarter of what the same build takes when the whole collection is one chunk.
    # The index's own memory (faiss) and the model's are not counted: a flat index holds every
    # vector by design; an ivfpq one holds codes.
    import functools
    import tracemalloc

    import indexes.corpora  # noqa: F401  (imported before measuring: imports are not the build)

    # Fixed-size buffers (rows added to an index at a time, blocks hashed) scaled to this
    # small collection, as they are small beside a large one.
    monkeypatch.setattr(compressed, "CHUNK", 32)
    monkeypatch.setattr(store, "sha256_file", functools.partial(store.sha256_file, chunk=1 << 14))
    source = write_jsonl(tmp_path / "docs.jsonl", documents(360, words=10))
    embedder.encode_passages(["warm-up"] * 4)  # first calls allocate caches that stay

    def peak(chunk_passages: int, home: str) -> tuple[int, int]:
        monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / home))
        tracemalloc.start()
        try:
            folder = ingest.ingest(f"jsonl:{source}", embedder=embedder, chunk_passages=chunk_passages, log=lambda *_: None)
            return tracemalloc.get_traced_memory()[1], store.read_manifest(folder)["passages"]
        finally:
            tracemalloc.stop()

    chunked, passages = peak(8, "chunked")      # measured first: anything imported late counts here
    whole, _ = peak(100_000, "whole")
    print(f"{passages} passages: peak {chunked / 1e3:.0f} kB in chunks of 8, {whole / 1e3:.0f} kB in one")
    collection = source.stat().st_size + passages * embedder.dim * 4
    assert passages > 300
    assert chunked < collection / 2, (chunked, collection)
    assert chunked < whole / 4, (chunked, whole)
