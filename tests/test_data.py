"""QA data sets, EVAL.md's split and coverage rules, and the collections built from them."""
import collections
import gzip
import json

import pytest

from crosearch_agent import qa_data
from crosearch_agent.languages import XQUAD_LANGS
from indexes import corpora


def test_xquad_article_split_matches_eval_md(shared_data):
    paragraphs, questions = qa_data.load_xquad("en")
    articles = {p.title for p in paragraphs}
    assert collections.Counter(qa_data.xquad_split(t) for t in articles) == {"train": 22, "dev": 9, "test": 17}
    assert collections.Counter(qa_data.xquad_split(q.title) for q in questions) == {"train": 525, "dev": 196, "test": 469}


def test_an_evals_limit_takes_the_same_questions_in_every_language_one_per_paragraph_first(shared_data):
    from crosearch_agent.eval import qa_questions, spread

    questions = qa_questions("xquad", "test", None, 30)
    ids = collections.defaultdict(list)
    for q in questions:
        ids[q.lang].append(q.id)
    assert len(ids) == 12 and all(those == ids["en"] for those in ids.values()) and len(ids["en"]) == 30
    assert len({q.doc_id for q in questions}) == 30 and len({q.title for q in questions}) == 15
    # Past one question per paragraph, the second ones follow; no limit: all, in file order.
    a = [qa_data.Question(f"a{i}", "en", "?", ("x",), "xquad", "A", 0) for i in range(3)]
    b = [qa_data.Question("b0", "en", "?", ("x",), "xquad", "B", 0)]
    assert [q.id for q in spread(a + b, 3)][2] == "a1" and {q.id for q in spread(a + b, 2)} == {"a0", "b0"}
    assert spread(a + b, None) == a + b


def test_translations_share_ids_titles_and_paragraphs(shared_data):
    en = qa_data.load_xquad("en")[1]
    for lang in ("zh", "th", "ar"):
        other = qa_data.load_xquad(lang)[1]
        assert [(q.id, q.title, q.paragraph) for q in other] == [(q.id, q.title, q.paragraph) for q in en]


def test_byte_order_marks_are_stripped(shared_data):
    raw = {lang: json.loads((shared_data / "xquad" / f"xquad.{lang}.json").read_text(encoding="utf-8"))
           for lang in ("th", "ar", "zh")}
    assert any(par["context"].startswith("\ufeff") for d in raw.values() for a in d["data"] for par in a["paragraphs"])
    for lang in raw:
        assert not any(p.context.startswith("\ufeff") for p in qa_data.load_xquad(lang)[0])


def test_partial_coverage_is_exactly_eval_md_rule(shared_data):
    import random

    langs = qa_data.partial_languages("Super_Bowl_50", 0)
    assert langs == random.Random("Super_Bowl_50/0").sample(sorted(XQUAD_LANGS), 3)
    by_lang = corpora.load_collection_passages("xquad-partial")
    holders = collections.defaultdict(set)
    for lang, passages in by_lang.items():
        for p in passages:
            holders[p.doc_id].add(lang)
    assert len(holders) == 240
    for doc_id, found in holders.items():
        title, index = doc_id.rsplit("/", 1)
        assert found == set(qa_data.partial_languages(title, int(index)))
    local = sum(qa_data.is_local(q) for q in qa_data.xquad_questions())
    assert local / (12 * 1190) == pytest.approx(0.25, abs=0.02)  # ~75% of questions are cross-lingual


def test_full_xquad_collection_has_every_paragraph_in_every_language(shared_data):
    by_lang = corpora.load_collection_passages("xquad", ["de", "zh"])
    for lang in ("de", "zh"):
        assert len({p.doc_id for p in by_lang[lang]}) == 240


def test_passages_are_about_100_words_or_characters():
    words = " ".join(f"w{i}" for i in range(250))
    pieces = corpora.chunk(words, "en")
    assert len(pieces) == 3 and all(80 <= len(p.split()) <= 100 for p in pieces)
    assert " ".join(pieces) == words  # nothing lost
    zh = "。".join("这是一个用于测试的中文句子" for _ in range(40)) + "。"
    pieces = corpora.chunk(zh, "zh")
    assert len(pieces) >= 3 and max(map(len, pieces)) <= 1.3 * corpora.CHARS_PER_PASSAGE["zh"]
    assert "".join(pieces) == zh
    assert corpora.chunk("   ", "en") == []


def test_tydiqa_goldp_loads_per_language_from_squad_files(shared_data):
    paragraphs, questions = qa_data.load_tydiqa("train")
    assert collections.Counter(q.lang for q in questions) == {"en": 3696, "sw": 2755, "ko": 1625}
    assert all(q.answers for q in questions)
    passages = corpora.load_collection_passages("tydiqa-goldp", ["ko"])
    assert set(passages) == {"ko"} and len(passages["ko"]) > 1000


def test_mkqa_sample_gives_parallel_questions(shared_data):
    questions = qa_data.load_mkqa()
    by_id = collections.defaultdict(set)
    for q in questions:
        by_id[q.id].add(q.lang)
    assert len(by_id) == 6 and all(len(langs) == 26 for langs in by_id.values())
    de = [q for q in questions if q.lang == "de"]
    assert any("2017" in q.answers for q in de)


def test_mkqa_reader_handles_a_written_file(tmp_path):
    path = tmp_path / "m.jsonl.gz"
    rec = {"example_id": 1, "query": "q", "queries": {"en": "who?", "de": "wer?"},
           "answers": {"en": [{"type": "entity", "text": "Ada", "aliases": ["Ada Lovelace"]}], "de": [{"type": "unanswerable", "text": None}]}}
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
    qs = {q.lang: q for q in qa_data.read_mkqa(path)}
    assert qs["en"].answers == ("Ada", "Ada Lovelace") and qs["de"].answers == ()


def test_wiki_summaries_are_distractors_in_en_es_fr():
    by_lang = corpora.load_collection_passages("wiki-summaries", ["es"])
    assert set(by_lang) == {"es"} and len(by_lang["es"]) > 5000
    assert all(p.source == "wiki-summaries" and p.text for p in by_lang["es"][:100])


def test_jsonl_collection_and_combination(tmp_path, shared_data):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "a", "lang": "de", "title": "T", "text": "Ein kurzer Text."}) + "\n"
                    + json.dumps({"id": "b", "lang": "sw", "title": "U", "text": "Maandishi mafupi."}) + "\n")
    combined = corpora.load_collection_passages(f"xquad-partial+jsonl:{path}", ["de", "sw"])
    assert {p.doc_id for p in combined["sw"]} == {"b"}
    assert "a" in {p.doc_id for p in combined["de"]} and len(combined["de"]) > 50
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        corpora.load_collection_passages(f"jsonl:{bad}", ["en"])


def test_unknown_collection_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown collection 'nope'"):
        corpora.load_collection_passages("xquad+nope")


def test_missing_local_data_fails_fast_with_a_pointer(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(qa_data.DataNotFound, match=r"XQuAD \(de\).*--data-dir"):
        qa_data.load_xquad("de", data_dir=tmp_path)
