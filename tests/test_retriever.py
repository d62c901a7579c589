"""Cross-lingual retrieval: translations align into one item, rank fusion across indexes."""
import numpy as np
import pytest

from crosearch_agent import store
from crosearch_agent.fusion import align
from crosearch_agent.retriever import Retriever
from crosearch_agent.store import Passage

DIM = 32


def _unit(v):
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def parallel(tmp_path):
    """Three languages holding noisy 'translations' of the same 8 facts, plus a fact only in 'fr'."""
    rng = np.random.default_rng(0)
    facts = _unit(rng.normal(size=(9, DIM)))
    passages, vectors = {}, {}
    for lang in ("de", "en", "fr"):
        ids = range(9) if lang == "fr" else range(8)
        passages[lang] = [Passage(f"{lang}/{i}", lang, f"F{i}", f"fact {i} in {lang}", f"doc/{i}") for i in ids]
        vectors[lang] = _unit(facts[list(ids)] + 0.05 * rng.normal(size=(len(ids), DIM)))
    store.write_collection(tmp_path / "c", passages, vectors, embedder_id="e", dim=DIM, index_type="flat", inputs_hash="h")
    return Retriever(store.load_collection(tmp_path / "c"), embedder=None), facts


def test_translations_of_one_passage_become_one_evidence_item(parallel):
    retriever, facts = parallel
    [evidence] = retriever.search_vectors(facts[3:4], ["de", "en", "fr"], k=5, query_lang="en")
    top = evidence[0]
    assert sorted(top.languages) == ["de", "en", "fr"] and top.doc_ids == {"doc/3"}
    assert top.lang == "en"  # the query language's version is the one shown
    assert top.passage_ids[0] == "en/3" and sorted(top.passage_ids) == ["de/3", "en/3", "fr/3"]
    for item in evidence:  # a group never holds two passages of one language
        assert len(item.languages) == len(set(item.languages))
    assert [e.rank for e in evidence] == list(range(1, len(evidence) + 1))


def test_rank_fusion_prefers_facts_found_in_several_languages(parallel):
    retriever, facts = parallel
    # A query halfway between fact 8 (only in fr) and fact 2 (in all three languages).
    q = _unit(0.5 * facts[8] + 0.5 * facts[2])[None]
    [evidence] = retriever.search_vectors(q, ["de", "en", "fr"], k=3, query_lang="de")
    assert evidence[0].doc_ids == {"doc/2"}
    assert evidence[0].score == pytest.approx(sum(retriever.vote(h) for h in evidence[0].members))
    assert all(a.score >= b.score for a, b in zip(evidence, evidence[1:]))


def test_local_search_uses_only_the_query_language(parallel):
    retriever, facts = parallel
    [evidence] = retriever.search_vectors(facts[:1], ["de"], k=4, query_lang="de")
    assert {l for e in evidence for l in e.languages} == {"de"}


def test_concat_baseline_merges_by_raw_score_without_alignment(parallel):
    retriever, facts = parallel
    [evidence] = retriever.concat_vectors(facts[5:6], ["de", "en", "fr"], k=3)
    assert all(len(e.members) == 1 for e in evidence)
    assert {e.doc_ids.pop() for e in evidence} == {"doc/5"}  # the same fact three times: no merge
    assert all(a.score >= b.score for a, b in zip(evidence, evidence[1:]))


def test_unknown_language_is_a_clear_error(parallel):
    retriever, facts = parallel
    with pytest.raises(ValueError, match=r"no index for language\(s\) \['xx'\]"):
        retriever.search_vectors(facts[:1], ["de", "xx"])


def test_votes_are_weighted_by_how_much_a_hit_stands_out_in_its_own_list(parallel):
    retriever, facts = parallel
    [evidence] = retriever.search_vectors(facts[4:5], ["de", "en", "fr"], k=9, query_lang="en")
    top, rest = evidence[0], evidence[1:]
    assert top.doc_ids == {"doc/4"} and all(h.z > 2 for h in top.members)
    assert top.score > 10 * max(e.score for e in rest)  # a clear answer is not one vote among equals
    plain = Retriever(retriever.collection, None, score_weight=0.0)
    [evidence] = plain.search_vectors(facts[4:5], ["de", "en", "fr"], k=3, query_lang="en")
    assert evidence[0].score == pytest.approx(3 / 61)  # plain RRF: three rank-1 votes


def test_align_groups_only_above_the_threshold_and_never_two_of_one_language():
    v = _unit(np.array([[1, 0, 0], [0.99, 0.1, 0], [0.98, 0.12, 0], [0, 1, 0]], dtype=np.float32))
    groups = align(["de", "de", "en", "en"], v, threshold=0.9)
    # 1-2 is the closest cross-language pair; 0 cannot join it (it already has a "de").
    assert sorted(map(sorted, groups)) == [[0], [1, 2], [3]]
    assert sorted(map(sorted, align(["de", "en", "fr", "es"], v, threshold=0.9999))) == [[0], [1], [2], [3]]


def test_the_local_and_remote_retrievers_are_both_searchers_the_agent_can_use(parallel):
    from crosearch_agent.evidence import Searcher
    from crosearch_agent.remote import RemoteRetriever

    retriever, _ = parallel
    assert isinstance(retriever, Searcher)
    assert all(callable(getattr(RemoteRetriever, name, None)) for name in ("search", "concat"))
    assert isinstance(RemoteRetriever.languages, property)
