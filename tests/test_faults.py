"""Faults on the index side: damaged files, full disks, killed builds, readers during a rewrite.

The promise under test (crosearch_agent.store): a damaged index is refused with a message
that names the file and says to rebuild; a build that fails part-way (disk full, killed)
leaves the previous index loadable and no half-written one that loads.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from crosearch_agent import store
from crosearch_agent.config import REPO_ROOT
from crosearch_agent.store import Passage, StoreError

DIM = 16


def _collection(seed: int, n: int = 20, langs=("de", "en")):
    rng = np.random.default_rng(seed)
    passages = {l: [Passage(f"{l}/{i}", l, f"T{i}", f"text {l} {i} " + "x" * 50, f"doc/{i}", 0, "test") for i in range(n)]
                for l in langs}
    vectors = {}
    for l in langs:
        v = rng.normal(size=(n, DIM)).astype(np.float32)
        vectors[l] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return passages, vectors


def _write(dest, seed=0, n=20, langs=("de", "en")):
    passages, vectors = _collection(seed, n, langs)
    return store.write_collection(dest, passages, vectors, embedder_id="emb", dim=DIM, index_type="flat", inputs_hash=f"h{n}")


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


# ---------------------------------------------------------------- damaged files

DAMAGE = {
    "faiss truncated": lambda f: (f / "de.faiss").write_bytes((f / "de.faiss").read_bytes()[:100]),
    "faiss emptied": lambda f: (f / "de.faiss").write_bytes(b""),
    "faiss swapped with another language's": lambda f: (f / "de.faiss").write_bytes((f / "en.faiss").read_bytes()),
    "faiss one byte flipped": lambda f: (f / "de.faiss").write_bytes(_flip((f / "de.faiss").read_bytes(), -5)),
    "jsonl truncated mid-line": lambda f: (f / "de.jsonl").write_bytes((f / "de.jsonl").read_bytes()[:-30]),
    "jsonl truncated at a line end": lambda f: (f / "de.jsonl").write_text(
        "".join((f / "de.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8"),
    "jsonl swapped with another language's": lambda f: (f / "de.jsonl").write_bytes((f / "en.jsonl").read_bytes()),
    "jsonl line not a passage": lambda f: (f / "de.jsonl").write_text(
        "\n".join(['{"unexpected": 1}'] * 20) + "\n", encoding="utf-8"),
}


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("verify", [True, False], ids=["checksums", "no-checksums"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_files_are_refused_with_a_message_naming_the_file(tmp_path, damage, verify):
    folder = _write(tmp_path / "c")
    DAMAGE[damage](folder)
    if not verify and damage in ("faiss swapped with another language's", "faiss one byte flipped"):
        # Without checksums a same-shaped vector file is indistinguishable from the right one:
        # that is what verification is for (load_retriever verifies by default).
        store.load_collection(folder, "emb", verify=False)
        return
    with pytest.raises(StoreError) as err:
        store.load_collection(folder, "emb", verify=verify)
    message = str(err.value)
    assert "index 'c'" in message and "de." in message and "rebuild" in message, message


MANIFEST_DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "not an object": lambda text: "[1, 2, 3]",
    "embedder entry missing": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "embedder"}),
    "languages entry of the wrong type": lambda text: json.dumps({**json.loads(text), "languages": ["de", "en"]}),
    "file entry pointing outside the folder": lambda text: json.dumps(
        {**json.loads(text), "languages": {"de": {"count": 20, "index": "../../etc/passwd", "passages": "de.jsonl"}}}),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_a_damaged_manifest_is_refused(tmp_path, damage):
    folder = _write(tmp_path / "c")
    path = folder / store.MANIFEST
    path.write_text(MANIFEST_DAMAGE[damage](path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(StoreError, match="index 'c'.*(manifest|rebuild)"):
        store.load_collection(folder, "emb")
    # The build's "is it up to date?" check must not crash on it either.
    assert store.read_manifest(folder) is None or isinstance(store.read_manifest(folder), dict)


def test_another_collections_manifest_swapped_in_is_refused(tmp_path):
    a, b = _write(tmp_path / "a", seed=1), _write(tmp_path / "b", seed=2)
    (a / store.MANIFEST).write_bytes((b / store.MANIFEST).read_bytes())
    with pytest.raises(StoreError, match="does not match its manifest checksum"):
        store.load_collection(a, "emb")


# ---------------------------------------------------------------- full disk while writing

def _assert_old_index_intact(folder: Path, n: int = 20):
    col = store.load_collection(folder, "emb")
    assert {lang: len(p) for lang, p in col.passages.items()} == {"de": n, "en": n}
    assert _siblings(folder) == [folder.name], "a failed write left debris beside the index"


def test_disk_full_in_the_faiss_writer_keeps_the_old_index(tmp_path, monkeypatch):
    import faiss

    folder = _write(tmp_path / "c")
    real, calls = faiss.write_index, []

    def failing(index, path):  # as faiss reports it: a RuntimeError from its C++ writer
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError(f"Error in faiss::write_index: write error in {path}: 0 != 2048 (No space left on device)")
        real(index, path)

    monkeypatch.setattr(faiss, "write_index", failing)
    with pytest.raises(OSError, match="could not write index 'c'.*No space left on device.*previous index is unchanged"):
        _write(folder, seed=5, n=30)
    _assert_old_index_intact(folder)


class _FullDisk:
    """A text file whose writes fail with ENOSPC once `budget` characters have gone through."""

    def __init__(self, fh, budget: int):
        self.fh, self.budget = fh, budget

    def write(self, s):
        self.budget -= len(s)
        if self.budget < 0:
            raise OSError(28, "No space left on device")
        return self.fh.write(s)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_disk_full_while_writing_passages_keeps_the_old_index(tmp_path, monkeypatch):
    folder = _write(tmp_path / "c")

    def opener(path, mode="r", *args, **kw):
        fh = open(path, mode, *args, **kw)
        return _FullDisk(fh, 500) if "w" in mode and str(path).endswith(".jsonl") else fh

    monkeypatch.setattr(store, "open", opener, raising=False)  # shadows the builtin inside store only
    with pytest.raises(OSError, match="No space left on device"):
        _write(folder, seed=5, n=30)
    _assert_old_index_intact(folder)


def test_disk_full_while_syncing_the_manifest_keeps_the_old_index(tmp_path, monkeypatch):
    folder = _write(tmp_path / "c")

    def fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left on device"):
        _write(folder, seed=5, n=30)
    _assert_old_index_intact(folder)


def test_a_failed_swap_puts_the_old_index_back(tmp_path, monkeypatch):
    """The last step moves the old folder aside and the new one in; if the second move
    fails, the old index must go back where loaders look for it."""
    folder = _write(tmp_path / "c")
    real, calls = os.rename, []

    def rename(src, dst):
        calls.append((str(src), str(dst)))
        if len(calls) == 2:  # the new folder into place
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space left on device"):
        _write(folder, seed=5, n=30)
    monkeypatch.setattr(os, "rename", real)
    _assert_old_index_intact(folder)


_REAL_WRITE_LIMIT = """
import resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.test_faults import _write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write(2) then returns EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    _write(Path(sys.argv[1]), seed=5, n=200)
except OSError as err:
    print("OSError:", err)
    sys.exit(3)
"""


def test_a_real_failing_write_fails_cleanly(tmp_path):
    """The kernel refuses a write part-way through a file (RLIMIT_FSIZE: EFBIG, like ENOSPC
    a short write): the build reports a clear error, and the old index still loads."""
    folder = _write(tmp_path / "c")
    proc = subprocess.run([sys.executable, "-c", _REAL_WRITE_LIMIT, str(folder), str(REPO_ROOT)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "could not write index 'c'" in proc.stdout and "File too large" in proc.stdout, proc.stdout
    _assert_old_index_intact(folder)


_KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import faiss
from tests.test_faults import _write
real = faiss.write_index
def die(index, path):  # power cut while writing the second language
    if path.endswith("en.faiss"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(index, path)
faiss.write_index = die
_write(Path(sys.argv[1]), seed=5, n=30)
"""


def test_a_build_killed_mid_write_keeps_the_old_index_and_its_debris_is_cleared(tmp_path):
    folder = _write(tmp_path / "c")
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(folder), str(REPO_ROOT)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert store.load_collection(folder, "emb").passages["de"][0].id == "de/0"
    debris = [name for name in _siblings(folder) if name != "c"]
    assert debris and all(".c.tmp-" in d for d in debris)  # the killed writer could not clean up...
    _write(folder, seed=6, n=25)  # ...so the next write does
    assert _siblings(folder) == ["c"] and len(store.load_collection(folder, "emb").passages["en"]) == 25


def test_readers_during_rewrites_see_a_whole_index_or_a_clear_error(tmp_path):
    """Never a mix of old and new files: every load gives one version, complete and
    checksum-verified, or a StoreError (in the instant the folder is being swapped)."""
    folder = _write(tmp_path / "c", n=20)
    stop, seen, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                col = store.load_collection(folder, "emb")
                seen.append({lang: len(p) for lang, p in col.passages.items()})
            except StoreError as err:
                errors.append(str(err))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(15):
            _write(folder, seed=i, n=20 + 10 * (i % 2))
            time.sleep(0.005)
    finally:
        stop.set()
        reader.join()
    assert seen and all(s in ({"de": 20, "en": 20}, {"de": 30, "en": 30}) for s in seen)
    # Only the two clear messages of a folder in mid-swap; never a checksum or shape error,
    # which would mean files of two versions were read together.
    clear = ("no index for collection 'c'", "index 'c' kept changing while it was being loaded")
    assert all(any(m in e for m in clear) for e in errors), errors[:3]


# ---------------------------------------------------------------- the real build, slow

@pytest.mark.slow
def test_build_with_a_full_disk_reports_it_and_the_old_index_still_serves(tmp_path, monkeypatch, shared_data, capsys):
    import faiss

    from crosearch_agent import qa_data
    from indexes import build, ingest

    # Indexes in a scratch home; the bundled models stay where they are (no re-materialising).
    monkeypatch.setattr(store, "data_home", lambda: tmp_path / "home")
    path = tmp_path / "small.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for lang in ("de", "en", "zh"):
            for p in qa_data.load_xquad(lang)[0][:3]:
                fh.write(json.dumps({"id": p.doc_id, "lang": lang, "title": p.title, "text": p.context}, ensure_ascii=False) + "\n")
    name = f"jsonl:{path}"
    folder = build.build(name, log=lambda *_: None)
    before = store.read_manifest(folder)["files"]

    real = faiss.write_index
    monkeypatch.setattr(faiss, "write_index", lambda index, p: real(index, p) if p.endswith("de.faiss") else (_ for _ in ()).throw(
        RuntimeError(f"Error in faiss::write_index: write error in {p}: 0 != 1536 (No space left on device)")))
    assert build.main(["--collection", name, "--force"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write index") and "No space left on device" in err, err
    monkeypatch.setattr(faiss, "write_index", real)
    assert store.read_manifest(folder)["files"] == before
    assert store.load_collection(folder, "bundled:multilingual-e5-small").languages == ["de", "en", "zh"]
    # No half-written index is left beside it; the ingest's work folder (the embedded chunks
    # that `--add` and a resumed build reuse) stays.
    assert _siblings(folder) == sorted([folder.name, ingest.work_dir(folder).name])

    # A damaged file makes the next build rebuild instead of calling the index up to date.
    (folder / "zh.faiss").write_bytes(b"")
    logs = []
    build.build(name, log=logs.append)
    assert any("rebuilding" in line and "zh.faiss" in line for line in logs), logs
    store.load_collection(folder, "bundled:multilingual-e5-small")
