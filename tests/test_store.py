"""Per-language FAISS indexes on disk: round trip, refusal of bad indexes, atomic writes."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crosearch_agent import store
from crosearch_agent.store import Passage, StoreError


def _unit(rng, n, dim=16):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _collection(rng, langs=("de", "en"), n=20):
    passages = {l: [Passage(f"{l}/{i}", l, f"T{i}", f"text {l} {i}", f"doc/{i}", 0, "test") for i in range(n)] for l in langs}
    vectors = {l: _unit(rng, n) for l in langs}
    return passages, vectors


def _write(dest, passages, vectors, embedder="emb-a", index_type="flat"):
    dim = next(iter(vectors.values())).shape[1]
    return store.write_collection(dest, passages, vectors, embedder_id=embedder, dim=dim, index_type=index_type,
                                  inputs_hash="h")


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_round_trip_returns_the_same_passages_and_neighbours(tmp_path, index_type):
    rng = np.random.default_rng(0)
    passages, vectors = _collection(rng)
    _write(tmp_path / "c", passages, vectors, index_type=index_type)
    col = store.load_collection(tmp_path / "c", "emb-a")
    assert col.languages == ["de", "en"] and col.passages == passages
    scores, positions = col.search("de", vectors["de"][:5], 3)
    assert positions[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.allclose(col.vector("en", 7), vectors["en"][7], atol=1e-6)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["embedder"] == {"id": "emb-a", "dim": 16} and manifest["passages"] == 40
    assert set(manifest["files"]) == {"de.faiss", "de.jsonl", "en.faiss", "en.jsonl"}


def test_index_built_with_another_embedder_is_refused(tmp_path):
    passages, vectors = _collection(np.random.default_rng(1))
    _write(tmp_path / "c", passages, vectors, embedder="emb-a")
    with pytest.raises(StoreError, match="built with embedder 'emb-a'.*'emb-b'.*--embedder emb-b"):
        store.load_collection(tmp_path / "c", "emb-b")


@pytest.mark.parametrize("damage", ["truncate", "swap", "delete"])
def test_corrupt_truncated_or_swapped_files_are_refused(tmp_path, damage):
    passages, vectors = _collection(np.random.default_rng(2))
    folder = _write(tmp_path / "c", passages, vectors)
    target = folder / "de.faiss"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "swap":
        target.write_bytes((folder / "en.faiss").read_bytes())
    else:
        target.unlink()
    with pytest.raises(StoreError, match="de.faiss") as err:
        store.load_collection(folder, "emb-a")
    assert "rebuild" in str(err.value)


def test_missing_index_and_missing_manifest_say_how_to_build(tmp_path):
    with pytest.raises(StoreError, match="no index for collection 'nothing'.*indexes.build --collection nothing"):
        store.load_collection(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(StoreError, match="no readable manifest"):
        store.load_collection(tmp_path / "half")


def test_a_crash_mid_write_leaves_the_old_index_loadable_and_no_debris(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    passages, vectors = _collection(rng)
    folder = _write(tmp_path / "c", passages, vectors)
    import faiss

    real, calls = faiss.write_index, []

    def failing_writer(index, path):  # the disk fills up on the second language
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(index, path)

    monkeypatch.setattr(faiss, "write_index", failing_writer)
    new_passages, new_vectors = _collection(rng, n=30)
    with pytest.raises(OSError, match="No space left"):
        _write(tmp_path / "c", new_passages, new_vectors)
    col = store.load_collection(folder, "emb-a")
    assert len(col.passages["de"]) == 20  # the old index, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_vectors_and_passages_must_agree(tmp_path):
    passages, vectors = _collection(np.random.default_rng(4))
    vectors["en"] = vectors["en"][:5]
    with pytest.raises(StoreError, match="5 vectors for 20 passages"):
        _write(tmp_path / "c", passages, vectors)
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- ivfpq: compressed codes + vectors on disk

def _clustered(rng, n, dim=64, clusters=200):
    """Unit vectors around 200 fixed random centres (the same for every call, so queries drawn
    with another `rng` have neighbours): near neighbours exist, as in real collections."""
    centres = np.random.default_rng(0).normal(size=(clusters, dim))
    v = (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim)) * 0.4).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _ivfpq_collection(rng, n=12_000, tiny=40):
    """German large enough to train IVF-PQ, English too small (the flat fallback)."""
    passages = {l: [Passage(f"{l}/{i}", l, f"T{i}", f"text {l} {i}", f"doc/{i}", 0, "test") for i in range(count)]
                for l, count in (("de", n), ("en", tiny))}
    return passages, {"de": _clustered(rng, n), "en": _clustered(rng, tiny)}


@pytest.fixture(scope="module")
def ivfpq_folder(tmp_path_factory):
    """One ivfpq collection written through the store (training takes a few seconds: shared)."""
    passages, vectors = _ivfpq_collection(np.random.default_rng(5))
    folder = _write(tmp_path_factory.mktemp("ivfpq") / "c", passages, vectors, index_type="ivfpq")
    return folder, passages, vectors


def _copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "c"))


def test_ivfpq_finds_what_exact_search_finds(ivfpq_folder):
    folder, passages, vectors = ivfpq_folder
    col = store.load_collection(folder, "emb-a")
    assert col.passages == passages
    queries = _clustered(np.random.default_rng(6), 100)
    exact = store.make_index(vectors["de"], "flat").search(queries, 10)[1]
    scores, positions = col.search("de", queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(positions, exact)])
    assert recall >= 0.95, recall
    # The scores are exact inner products from the vectors on disk, not PQ estimates.
    assert np.allclose(scores[:, 0], np.einsum("ij,ij->i", vectors["de"][positions[:, 0]], queries), atol=1e-5)
    assert np.allclose(col.vector("de", 123), vectors["de"][123])
    assert col.search("en", vectors["en"][:3], 2)[1][:, 0].tolist() == [0, 1, 2]  # the flat fallback, exact


def test_ivfpq_manifest_records_type_parameters_and_fallback(ivfpq_folder):
    folder, _, _ = ivfpq_folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["index_type"] == "ivfpq"
    de, en = manifest["languages"]["de"], manifest["languages"]["en"]
    assert de["kind"] == "ivfpq" and de["vectors"] == "de.npy" and len(de["vectors_sample_sha256"]) == 64
    assert {"nlist", "m", "nbits", "train_size", "bytes_per_vector"} <= set(de["ivfpq"])
    assert en["kind"] == "flat" and "fewer than" in en["fallback"] and "vectors" not in en
    assert set(manifest["files"]) == {"de.faiss", "de.jsonl", "de.npy", "en.faiss", "en.jsonl"}
    assert manifest["files"]["de.npy"] == store.sha256_file(folder / "de.npy")  # hashed while written


def test_ivfpq_settings_reach_the_index(ivfpq_folder):
    folder, _, _ = ivfpq_folder
    index = store.load_collection(folder, "emb-a", nprobe=3, rerank=17).indexes["de"]
    assert (index.ivf.nprobe, index.rerank) == (3, 17)
    from crosearch_agent.config import Settings

    default = store.load_collection(folder, "emb-a").indexes["de"]
    assert (default.nprobe, default.rerank) == (Settings.nprobe, Settings.rerank)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-4096])


def _swap_rows(path):  # another build's vectors of the same shape: same size, same header
    arr = np.load(path)
    np.save(path, arr[::-1].copy())


def _zero_tail(path):
    with open(path, "r+b") as fh:
        fh.seek(-100_000, 2)
        fh.write(b"\0" * 100_000)


def _bad_header(path):
    data = bytearray(path.read_bytes())
    data[:6] = b"NOTNPY"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [lambda p: p.unlink(), _truncate, _swap_rows, _zero_tail, _bad_header],
                         ids=["missing", "truncated", "swapped", "zeroed tail", "bad header"])
def test_ivfpq_damaged_vector_file_is_refused(ivfpq_folder, tmp_path, damage):
    folder = _copy(ivfpq_folder[0], tmp_path)
    damage(folder / "de.npy")
    with pytest.raises(StoreError, match="index 'c'.*de.npy") as err:
        store.load_collection(folder, "emb-a")
    assert "rebuild" in str(err.value)


def test_ivfpq_a_flipped_byte_in_the_vectors_is_found_by_full_verification(ivfpq_folder, tmp_path):
    """The documented limit of the sampled check: a byte inside an unsampled row loads; the
    full sha256, checked on demand, refuses it."""
    folder = _copy(ivfpq_folder[0], tmp_path)
    path = folder / "de.npy"
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # between two sampled blocks
        fh.seek(size // 2 + size // 128)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    store.load_collection(folder, "emb-a")
    with pytest.raises(StoreError, match="de.npy does not match its manifest checksum"):
        store.load_collection(folder, "emb-a", verify="full")


def test_ivfpq_index_and_vectors_of_different_builds_are_refused(ivfpq_folder, tmp_path):
    folder = _copy(ivfpq_folder[0], tmp_path)
    (folder / "de.faiss").write_bytes((folder / "en.faiss").read_bytes())  # a flat index in place of IVF-PQ
    with pytest.raises(StoreError, match="de.faiss"):
        store.load_collection(folder, "emb-a", verify=False)


def test_ivfpq_vectors_are_read_in_chunks_from_a_memmap(tmp_path, monkeypatch):
    from crosearch_agent import compressed

    monkeypatch.setattr(compressed, "CHUNK", 1000)
    rng = np.random.default_rng(8)
    passages, vectors = _ivfpq_collection(rng, n=10_500)
    np.save(tmp_path / "de.npy", vectors["de"])
    on_disk = np.load(tmp_path / "de.npy", mmap_mode="r")
    reads = []

    class Tracked:  # an array-like that records every read
        shape, dtype = on_disk.shape, on_disk.dtype

        def __len__(self):
            return len(on_disk)

        def __getitem__(self, rows):
            out = on_disk[rows]
            reads.append(len(out))
            return out

    folder = _write(tmp_path / "c", passages, {"de": Tracked(), "en": vectors["en"]}, index_type="ivfpq")
    assert max(reads) <= 1000  # never the whole array at once
    col = store.load_collection(folder, "emb-a")
    assert np.array_equal(np.load(folder / "de.npy"), vectors["de"])
    assert col.search("de", vectors["de"][:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_the_builder_accepts_the_ivfpq_type(monkeypatch):
    from indexes import build

    seen = {}
    monkeypatch.setattr(build, "build", lambda collection, languages, embedder, index_type, *a, **kw: seen.update(
        collection=collection, index_type=index_type))
    assert build.main(["--collection", "xquad", "--index-type", "ivfpq"]) == 0
    assert seen == {"collection": "xquad", "index_type": "ivfpq"}
    with pytest.raises(SystemExit):
        build.main(["--collection", "xquad", "--index-type", "ivf"])


def test_the_builder_verifies_a_built_index_in_full(ivfpq_folder, tmp_path, monkeypatch):
    from indexes import build

    home = tmp_path / "home"
    shutil.copytree(ivfpq_folder[0], store.collection_dir("mine", home))
    monkeypatch.setenv("CROSEARCH_HOME", str(home))
    assert build.main(["--collection", "mine", "--verify"]) == 0
    path = store.collection_dir("mine", home) / "de.npy"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 + len(data) // 128] ^= 0xFF  # a byte the load's sampled check does not read
    path.write_bytes(bytes(data))
    store.load_collection(path.parent, "emb-a")
    assert build.main(["--collection", "mine", "--verify"]) == 1
