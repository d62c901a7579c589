"""EVAL.md's "Lang" check, `metrics.in_question_language`, as specifications: on hand-made
answers, and on XQuAD's gold answers in both directions (a language's own golds must pass; the
gold of another language for the same question, where it differs, must not). The second
direction is measured twice: with the question's parallel golds in every language (the eval and
the GRPO reward know them), and with the question language's gold alone, where the detector
decides within one script (the app knows no gold at all).

`python -m tests.test_answer_language` prints the per-language figures.
"""
import functools
import itertools
import random

import pytest

from crosearch_agent import qa_data
from crosearch_agent.config import data_dir
from crosearch_agent.languages import SCRIPTS, XQUAD_LANGS
from crosearch_agent.metrics import _has_letters, _surface, in_question_language, score_answer

PAIRS_PER_LANGUAGE = 500  # sampled (question, other language) pairs per question language
SEED = 11


# ---------------------------------------------------------------- hand-made cases

@pytest.mark.parametrize("answer, lang", [
    ("1263", "en"), ("7.2.2016", "de"), ("1,435", "ru"), ("", "zh"), (None, "en"), ("—", "th"),
])
def test_answers_without_letters_are_not_judged(answer, lang):
    assert in_question_language(answer, lang) is None


@pytest.mark.parametrize("answer, lang", [
    ("Denver Broncos", "en"),            # a name shared by the Latin-script languages
    ("Lady Gaga", "de"),
    ("die Verteidigung der Broncos", "de"),
    ("丹佛野马队", "zh"),
    ("Берлин", "ru"),
    ("NFL", "ru"),                       # a Latin acronym in a Cyrillic-script language
    ("матч NFL", "ru"),
    ("Людовика XIV", "ru"),              # roman numerals
    ("Kawann Short", "el"),              # Greek keeps many foreign names in Latin letters
    ("เส้นทางรถไฟแคบ 760 mm", "th"),     # units
    ("565 °C", "ru"),
])
def test_answers_written_the_languages_way_pass(answer, lang):
    assert in_question_language(answer, lang) is True


@pytest.mark.parametrize("answer, lang, golds", [
    ("丹佛野马队", "en", None),                       # another script
    ("the team from Denver won", "zh", None),
    ("Berlin ist die Hauptstadt", "ru", None),
    ("Denver Broncos", "ru", ["Денвер Бронкос"]),    # the gold shows Russian writes it in Cyrillic
    ("Берлин", "de", None),
    ("小触手tentilla", "es", ["tentilla"]),           # a third script in the answer
    ("12th", "th", None),                            # short Latin words make no answer alone
    ("die Verteidigung der Broncos", "en", None),    # same script, but the detector is sure it is German
    ("the defence of the Broncos", "de", None),
])
def test_answers_in_another_language_fail(answer, lang, golds):
    assert in_question_language(answer, lang, golds) is False


def test_the_gold_decides_how_the_language_writes_this_answer():
    # The gold always passes, whatever a detector makes of it.
    assert in_question_language("Tyne and Wear Metro", "ru", ["Tyne and Wear Metro"]) is True
    # An answer made of the gold's words passes.
    assert in_question_language("Broncos", "en", ["Denver Broncos"]) is True
    # A Latin name passes in Greek when the gold keeps Latin letters too, not when it does not.
    assert in_question_language("Anderson", "el", ["ο Anderson"]) is True
    assert in_question_language("Denver Broncos", "el", ["Ντένβερ Μπρόνκος"]) is False
    # Acronyms pass whatever the gold.
    assert in_question_language("NFL", "ru", ["Национальная футбольная лига"]) is True


WARSAW = {"en": ["Warsaw"], "de": ["Warschau"], "tr": ["Varşova"], "ro": ["Varșovia"], "el": ["Βαρσοβία"]}
DEFENCE = {"en": ["the Broncos' defense"], "de": ["die Verteidigung der Broncos"], "el": ["ο Anderson"],
           "es": ["Denver Broncos"]}


def test_another_languages_gold_is_written_that_languages_way():
    # Where the parallel golds are known, an answer made of another language's gold, and of
    # none of the question language's, is written the way that language writes it.
    assert in_question_language("Warschau", "en", golds_by_lang=WARSAW) is False
    assert in_question_language("Varşova", "en", golds_by_lang=WARSAW) is False
    assert in_question_language("Warsaw", "de", golds_by_lang=WARSAW) is False
    assert in_question_language("Verteidigung", "en", golds_by_lang=DEFENCE) is False  # a part of the gold too
    # The question language's own gold, or a part of it, still passes, whatever other golds share it.
    assert in_question_language("Warsaw", "en", golds_by_lang=WARSAW) is True
    assert in_question_language("Broncos", "de", golds_by_lang=DEFENCE) is True
    assert in_question_language("Anderson", "el", golds_by_lang=DEFENCE) is True
    # `golds` and the question language's entry are the same thing; a language without a gold
    # of its own is judged by the other golds and then as before.
    assert in_question_language("Warsaw", "en", ["Warsaw"], golds_by_lang={"de": ["Warschau"]}) is True
    assert in_question_language("Denver Broncos", "en", golds_by_lang=DEFENCE) is False
    assert in_question_language("the defence of the Broncos", "ro", golds_by_lang=WARSAW) is False  # the detector, sure
    # Without parallel golds the detector cannot place single words or names of one script.
    assert in_question_language("Varşova", "en", ["Warsaw"]) is True
    assert in_question_language("Warsaw", "de", ["Warschau"]) is True


def test_candidates_limit_the_same_script_languages_the_detector_weighs():
    # Among English and German alone the detector is sure; with no other Latin candidate it has no say.
    assert in_question_language("die Verteidigung der Broncos", "en", candidates=("en", "de")) is False
    assert in_question_language("die Verteidigung der Broncos", "en", candidates=("en", "ru")) is True


def test_score_answer_judges_the_language_against_the_golds():
    assert score_answer("Anderson", ["ο Anderson"], "el")["lang"] == 1.0
    assert score_answer("丹佛野马队", ["Denver Broncos"], "en")["lang"] == 0.0
    assert score_answer("1998", ["1998"], "de")["lang"] is None
    assert score_answer("Varşova", ["Warsaw"], "en", WARSAW)["lang"] == 0.0
    assert score_answer("Varşova", ["Warsaw"], "en")["lang"] == 1.0  # no parallel golds: the detector decides


# ---------------------------------------------------------------- XQuAD, both directions

@functools.lru_cache(maxsize=2)
def xquad_golds(root) -> dict[str, dict[str, str]]:
    """Question id -> language -> gold answer (XQuAD has one per question)."""
    golds: dict[str, dict[str, str]] = {}
    for lang in XQUAD_LANGS:
        for q in qa_data.load_xquad(lang, root)[1]:
            golds.setdefault(q.id, {})[lang] = q.answers[0]
    return golds


def own_golds_rejected(root) -> dict[str, tuple[int, int]]:
    """Per language: (golds judged not in their own language, golds with letters), judged
    without being told the gold (which would pass by rule)."""
    out = {}
    for lang in XQUAD_LANGS:
        verdicts = [in_question_language(by_lang[lang], lang) for by_lang in xquad_golds(root).values()]
        verdicts = [v for v in verdicts if v is not None]
        out[lang] = (verdicts.count(False), len(verdicts))
    return out


@functools.lru_cache(maxsize=2)
def differing_pairs(root) -> dict[str, list[tuple[str, str, dict[str, str]]]]:
    """Per question language L: a fixed random sample of (M's gold, M, the question's gold in
    every language), M != L, where M's gold has letters and differs from L's after normalisation."""
    rng = random.Random(SEED)
    golds = sorted(xquad_golds(root).items())
    out = {}
    for lang in XQUAD_LANGS:
        # Draw (question, M) in a seeded order and keep the first differing ones: a sample
        # without normalising all 13,000 pairs of the language.
        draws = [(by_lang, m) for _, by_lang in golds for m in XQUAD_LANGS if m != lang]
        rng.shuffle(draws)
        pairs = ((by_lang[m], m, by_lang) for by_lang, m in draws
                 if _has_letters(by_lang[m]) and _surface(by_lang[m], lang) != _surface(by_lang[lang], lang))
        out[lang] = list(itertools.islice(pairs, PAIRS_PER_LANGUAGE))
    return out


def _parallel(by_lang: dict[str, str]) -> dict[str, list[str]]:
    return {lang: [gold] for lang, gold in by_lang.items()}


@functools.lru_cache(maxsize=4)
def _pair_verdicts(root, parallel: bool) -> dict[str, list[tuple[bool, bool]]]:
    """Per language L: (M shares L's script, M's gold judged in L) per pair, judged with the
    question's golds in every language (`parallel`) or with L's gold alone."""
    def judged_in_l(answer, lang, by_lang):
        if parallel:
            return in_question_language(answer, lang, golds_by_lang=_parallel(by_lang)) is True
        return in_question_language(answer, lang, [by_lang[lang]]) is True

    return {lang: [(SCRIPTS[m] == SCRIPTS[lang], judged_in_l(answer, lang, by_lang)) for answer, m, by_lang in pairs]
            for lang, pairs in differing_pairs(root).items()}


def other_golds_accepted(root, same_script: bool | None = None, parallel: bool = True) -> dict[str, tuple[int, int]]:
    """Per language L: (other languages' golds judged in L, pairs), judged with the question's
    golds in every language (`parallel`), or with L's gold alone (the detector decides within a
    script). `same_script` True/False: only the pairs whose two languages share a script / do not."""
    out = {}
    for lang, verdicts in _pair_verdicts(root, parallel).items():
        kept = [ok for same, ok in verdicts if same_script is None or same == same_script]
        out[lang] = (sum(kept), len(kept))
    return out


def wrong_answers_rejected(root, parallel: bool = True) -> dict[str, tuple[int, int]]:
    """Per language L: (answers judged not in L, answers), the answers being L's golds of other
    questions (a wrong answer in the right language), each judged with its question's golds in
    every language (`parallel`: another language's gold may share a wrong answer's words) or
    with its question's L gold alone."""
    rng = random.Random(SEED)
    golds = [by_lang for _, by_lang in sorted(xquad_golds(root).items())]
    out = {}
    for lang in XQUAD_LANGS:
        pairs = [(rng.choice(golds)[lang], by_lang) for by_lang in golds]
        pairs = [(a, q) for a, q in pairs[:PAIRS_PER_LANGUAGE] if _has_letters(a) and _surface(a, lang) != _surface(q[lang], lang)]
        verdicts = [in_question_language(a, lang, golds_by_lang=_parallel(q)) if parallel
                    else in_question_language(a, lang, [q[lang]]) for a, q in pairs]
        out[lang] = (verdicts.count(False), len(verdicts))
    return out


def _over(rates: dict[str, tuple[int, int]], limit: float) -> dict[str, str]:
    return {lang: f"{k}/{n}" for lang, (k, n) in rates.items() if n and k / n > limit}


def test_xquad_gold_answers_are_in_their_own_language(shared_data):
    assert _over(own_golds_rejected(shared_data), 0.02) == {}


def test_another_languages_gold_is_rarely_in_the_question_language(shared_data):
    # Issue 11's target, met where the parallel golds are known (the eval, the GRPO reward).
    assert _over(other_golds_accepted(shared_data), 0.03) == {}


def test_without_parallel_golds_another_script_still_decides(shared_data):
    assert _over(other_golds_accepted(shared_data, same_script=False, parallel=False), 0.03) == {}


@pytest.mark.xfail(strict=True, reason="with the question language's gold alone (no parallel golds, as "
                   "in the app), the detector is rarely confident within one script: 24-43% of the "
                   "differing Latin-script golds pass (issue 11's target is 3%)")
def test_without_parallel_golds_another_languages_gold_is_rarely_in_the_question_language(shared_data):
    assert _over(other_golds_accepted(shared_data, parallel=False), 0.03) == {}


def test_without_parallel_golds_the_detector_still_rejects_most_same_script_golds(shared_data):
    # The measured level (24-43% accepted at CONFIDENT 0.85), as a guard against regressions.
    assert _over(other_golds_accepted(shared_data, same_script=True, parallel=False), 0.50) == {}


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel golds", "own gold only"])
def test_a_wrong_answer_in_the_right_language_is_rarely_judged_another(shared_data, parallel):
    # Greek is the exception (12%): its golds keep many names in Latin letters, and a Latin
    # name passes only where this question's gold writes it so.
    assert set(_over(wrong_answers_rejected(shared_data, parallel), 0.05)) <= {"el"}


def main() -> None:
    root = data_dir()
    tables = {"own golds judged NOT in their language (no gold given)": own_golds_rejected(root)}
    for parallel, given in ((True, "parallel golds given"), (False, "L's gold only: detector")):
        tables.update({f"other language's gold judged IN L ({given}), all pairs": other_golds_accepted(root, None, parallel),
                       f"  ... pairs of one script ({given})": other_golds_accepted(root, True, parallel),
                       f"  ... pairs of two scripts ({given})": other_golds_accepted(root, False, parallel)})
    tables.update({"another question's L gold judged NOT in L (parallel golds given)": wrong_answers_rejected(root, True),
                   "another question's L gold judged NOT in L (L's gold only)": wrong_answers_rejected(root, False)})
    print("| figure | " + " | ".join(XQUAD_LANGS) + " | all |\n|---|" + "---|" * (len(XQUAD_LANGS) + 1))
    for title, rates in tables.items():
        k, n = sum(r[0] for r in rates.values()), sum(r[1] for r in rates.values())
        cells = [f"{100 * rates[l][0] / rates[l][1]:.1f}%" if rates[l][1] else "-" for l in XQUAD_LANGS]
        print(f"| {title} | " + " | ".join(cells) + f" | {100 * k / n:.1f}% ({k}/{n}) |")


if __name__ == "__main__":
    main()
