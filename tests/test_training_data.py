"""Training data: XQuAD train articles only (in every language), parallel groups, the
multilingual spread of GRPO rollouts, TyDi GoldP rows, and evidence from held-out articles
kept out of training contexts."""
import collections

import pytest

from crosearch_agent import qa_data
from crosearch_agent.languages import XQUAD_LANGS
from crosearch_agent.evidence import Evidence, Hit
from crosearch_agent.store import Passage
from training import data
from training.config import load_config


@pytest.fixture(scope="module")
def examples(shared_data):
    return data.xquad_examples()


def test_examples_come_only_from_train_articles_in_every_language(examples):
    assert {qa_data.xquad_split(e.title) for e in examples} == {"train"}
    for e in examples:  # the translations the rewards score against are train questions too
        assert set(e.variants) == set(XQUAD_LANGS)
    # EVAL.md: 22 train articles, 525 questions, each in 12 languages.
    assert len({e.title for e in examples}) == 22
    assert len({e.group for e in examples}) == 525 and len(examples) == 525 * 12
    heldout = {q.title for q in qa_data.xquad_questions(["en"]) if qa_data.xquad_split(q.title) != "train"}
    assert heldout and not heldout & {e.title for e in examples}


def test_a_dev_or_test_article_is_refused(examples):
    dev_q = next(q for q in qa_data.xquad_questions(["de"]) if qa_data.xquad_split(q.title) == "dev")
    bad = data.Example("xquad/x/de", "xquad/x", "xquad", "xquad-partial", "de", dev_q.title, dev_q.paragraph,
                       {"de": data.Variant("de", dev_q.question, dev_q.answers)})
    with pytest.raises(ValueError, match="dev/test"):
        data.assert_train_only(examples[:3] + [bad])


def test_translations_share_a_group_and_carry_their_own_gold(examples):
    group = [e for e in examples if e.group == examples[0].group]
    assert sorted(e.lang for e in group) == sorted(XQUAD_LANGS)
    en = qa_data.load_xquad("en")[1]
    zh = {q.id: q for q in qa_data.load_xquad("zh")[1]}
    qid = examples[0].group.split("/", 1)[1]
    source = next(q for q in en if q.id == qid)
    assert group[0].variant("en").answers == source.answers
    assert group[0].variant("zh").answers == zh[qid].answers


def test_run_examples_are_seeded_mixed_and_train_only(shared_data):
    cfg = load_config(None, {"seed": 3})
    a, b = data.load_examples(cfg, n=50), data.load_examples(cfg, n=50)
    assert [e.key for e in a] == [e.key for e in b]
    assert len({e.lang for e in a}) >= 8 and len({e.group for e in a}) > 40
    assert {qa_data.xquad_split(e.title) for e in a} == {"train"}


def test_tydiqa_rows_are_single_language_groups_at_the_configured_share(shared_data):
    cfg = load_config(None, {"tydiqa_share": 0.25})
    rows = data.load_examples(cfg, n=40)
    tydi = [e for e in rows if e.dataset == "tydiqa-goldp"]
    assert len(tydi) == 10 and {e.collection for e in tydi} == {"tydiqa-goldp"}
    assert all(list(e.variants) == [e.lang] and e.variant().answers for e in tydi)
    assert {e.lang for e in tydi} <= {"en", "ko", "sw"}


def test_zero_examples_means_every_training_question_in_every_language(shared_data):
    every = data.load_examples(load_config(None, {"tydiqa_share": 0.5}), n=0)
    xquad = [e for e in every if e.dataset == "xquad"]
    assert len(xquad) == 12 * len({e.group for e in xquad}) == len(data.xquad_examples())  # 525 x 12
    assert len(every) - len(xquad) == len(data.tydiqa_examples())  # and every TyDi GoldP train question
    assert len(data.load_examples(load_config(None, {}), n=0)) == len(xquad)  # no TyDi without a share


# ---------------------------------------------------------------- multilingual groups

def _example(lang="de", langs=XQUAD_LANGS):
    variants = {l: data.Variant(l, f"q-{l}", (f"a-{l}",)) for l in langs}
    return data.Example(f"xquad/q1/{lang}", "xquad/q1", "xquad", "xquad-partial", lang, "T", 0, variants)


def test_a_group_spreads_over_the_configured_languages_of_one_question():
    ex = _example("de")
    langs = data.rollout_languages(ex, 3)
    assert langs[:2] == ["de", "en"] and len(set(langs)) == 3 and langs[2] in XQUAD_LANGS
    spread = data.assign_languages(ex, 6, 3)
    assert collections.Counter(spread) == {lang: 2 for lang in langs}
    # every rollout asks the same question, each in its language, against that language's gold
    assert {ex.variant(l).question for l in spread} == {f"q-{l}" for l in langs}
    assert data.assign_languages(ex, 6, 3) == spread  # deterministic


def test_the_ablation_keeps_a_whole_group_in_the_row_language():
    assert data.assign_languages(_example("zh"), 4, 3, multilingual=False) == ["zh"] * 4
    assert data.assign_languages(_example("zh"), 4, 1) == ["zh"] * 4


def test_an_english_row_and_a_single_language_group():
    assert data.rollout_languages(_example("en"), 3)[0] == "en" and len(set(data.rollout_languages(_example("en"), 3))) == 3
    assert data.assign_languages(_example("sw", ["sw"]), 4, 3) == ["sw"] * 4


# ---------------------------------------------------------------- held-out evidence

def _item(title, lang="en", source="xquad"):
    p = Passage(f"{source}/{lang}/{title}/0/0", lang, title.replace("_", " "), "text", f"{title}/0", 0, source)
    return Evidence(0, 1.0, [Hit(p, 0.9, 1)])


class _Listed:
    """A retriever returning a fixed list (the real one is exercised by the slow tests)."""
    languages = ["en"]
    embedder = None

    def __init__(self, items):
        self.items = items

    def search(self, query, languages=None, k=5, query_lang=None):
        return self.items[:k]


def test_evidence_from_held_out_articles_is_dropped_and_ranks_renumbered(shared_data):
    titles = sorted({q.title for q in qa_data.xquad_questions(["en"])})
    train = [t for t in titles if qa_data.xquad_split(t) == "train"]
    held = [t for t in titles if qa_data.xquad_split(t) != "train"]
    items = [_item(held[0]), _item(train[0]), _item("Some_TyDi_page", source="tydiqa-goldp"), _item(held[1]), _item(train[1])]
    kept = data.TrainOnlyRetriever(_Listed(items)).search("q", ["en"], k=3)
    assert [e.title for e in kept] == [train[0].replace("_", " "), "Some TyDi page", train[1].replace("_", " ")]
    assert [e.rank for e in kept] == [1, 2, 3]
