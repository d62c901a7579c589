"""Per-language FAISS indexes on disk: round trip, refusal of bad indexes, atomic writes."""
import json

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
    return store.write_collection(dest, passages, vectors, embedder_id=embedder, dim=16, index_type=index_type,
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
