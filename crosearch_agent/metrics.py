"""QA answer metrics, exactly as EVAL.md defines them, with per-language normalisation.

Every metric compares the *normalised* prediction with the normalised gold answers and keeps
the best gold. Normalisation is: Unicode NFKC, casefold, punctuation (category P*) to spaces,
English articles dropped (English only: "a" is a word in Spanish or Romanian), whitespace
collapsed. Tokens are whitespace-separated words, except in zh, ja and th, written without
spaces, where every non-space character is a token (as MKQA's official scorer does).

`score_answer` gives every metric of one answer as a dict; `mean_scores` averages such dicts.
`in_question_language` is EVAL.md's "Lang" check, which the GRPO language reward uses too.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

from crosearch_agent import languages
from crosearch_agent.languages import CHARACTER_LANGS, XQUAD_LANGS

ENGLISH_ARTICLES = frozenset({"a", "an", "the"})
METRIC_KEYS = ("em", "f1", "fem", "c3r", "em_any", "lang")


def normalize(text: str, lang: str) -> str:
    # NFKC again after casefold: casefolding can leave text that is not NFKC (the Unicode
    # "compatibility caseless match" recipe), e.g. full-width or ligature forms.
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text or "").casefold())
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    words = text.split()
    if lang == "en":
        words = [w for w in words if w not in ENGLISH_ARTICLES]
    return " ".join(words)


def tokens(text: str, lang: str) -> list[str]:
    norm = normalize(text, lang)
    if lang in CHARACTER_LANGS:
        return [ch for ch in norm if not ch.isspace()]
    return norm.split()


def _surface(text: str, lang: str) -> str:
    """The normalised text as compared by EM and fEM: spaces do not count in zh/ja/th."""
    return ("" if lang in CHARACTER_LANGS else " ").join(tokens(text, lang))


def _golds(golds, lang: str) -> list[str]:
    # A gold that normalises to nothing (".", "the") would match an empty prediction.
    return [g for g in golds if _surface(g, lang)]


def em(pred: str, golds, lang: str) -> float:
    surface = _surface(pred, lang)
    return float(any(surface == _surface(g, lang) for g in _golds(golds, lang)))


def _f1_one(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(pred: str, golds, lang: str) -> float:
    """SQuAD's bag-of-tokens F1, best over the gold answers."""
    pred_tokens = tokens(pred, lang)
    return max((_f1_one(pred_tokens, tokens(g, lang)) for g in _golds(golds, lang)), default=0.0)


def fem(pred: str, golds, lang: str) -> float:
    """Flexible EM: some normalised gold is a substring of the normalised prediction."""
    surface = _surface(pred, lang)
    return float(any(_surface(g, lang) in surface for g in _golds(golds, lang)))


def _char_ngrams(text: str, n: int = 3) -> Counter:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def c3r(pred: str, golds, lang: str) -> float:
    """Character 3-gram recall: the share of the gold's 3-grams (counted with multiplicity)
    that also occur in the prediction, best over the golds.

    Computed on the normalised text with all spaces removed, so word segmentation (Thai,
    Chinese, "New York" vs "NewYork") does not matter. A gold shorter than 3 characters has
    no 3-gram: it scores 1 if it is a substring of the prediction, else 0.
    """
    pred_chars = re.sub(r"\s+", "", normalize(pred, lang))
    best = 0.0
    for gold in _golds(golds, lang):
        gold_chars = re.sub(r"\s+", "", normalize(gold, lang))
        if len(gold_chars) < 3:
            score = float(gold_chars in pred_chars)
        else:
            grams = _char_ngrams(gold_chars)
            score = sum((grams & _char_ngrams(pred_chars)).values()) / sum(grams.values())
        best = max(best, score)
    return best


def em_any(pred: str, golds_by_lang: dict[str, list[str]]) -> float:
    """EM against the parallel gold answers of every language, each normalised in its language."""
    return max((em(pred, golds, lang) for lang, golds in golds_by_lang.items()), default=0.0)


def _has_letters(text: str) -> bool:
    return any(unicodedata.category(ch).startswith("L") for ch in text)


# The detector's probability, among the candidates of the answer's script, above which it may
# say "another language". Names, titles and short words are shared by the languages of one
# script and get lower figures. Measured on XQuAD's Latin-script languages: at 0.85 it rejects
# 0.5-1.8% of their own golds and accepts 24-43% of the other Latin-script languages' differing
# golds; at 0.6, 2.5-7.3% and 17-28%. A detector cannot place short shared words either way:
# where the parallel golds are known, an answer made of another language's gold fails by rule
# instead (0-1% of those differing golds pass).
CONFIDENT = 0.85


def _runs(text: str) -> list[tuple[str | None, str]]:
    """The text's runs of letters of one script, as (script, letters); combining marks
    (Devanagari and Thai vowel signs) continue a run, anything else ends it."""
    runs: list[tuple[str | None, str]] = []
    current: tuple[str | None, str] | None = None
    for ch in text:
        category = unicodedata.category(ch)
        if category.startswith("L"):
            s = languages.script(ch)
            if current and current[0] == s:
                current = (s, current[1] + ch)
            else:
                if current:
                    runs.append(current)
                current = (s, ch)
        elif not (category.startswith("M") and current):
            if current:
                runs.append(current)
            current = None
    if current:
        runs.append(current)
    return runs


def _in_own_script(answer: str, lang: str, golds) -> bool:
    """Is the answer written in the language's script? Letters of a third script fail it
    (Greek in a Spanish or a Russian answer). Latin letters, which languages of other scripts
    mix in, fail it when they outnumber its own letters, not counting acronyms and roman
    numerals ("NFL", "ctDNA", "XIV") nor the names the language keeps in Latin letters: the
    golds' words when golds are given (the Greek gold "ο Anderson" lets "Anderson" pass, the
    gold "Ντένβερ Μπρόνκος" does not let "Denver Broncos"), else any capitalised word (XQuAD's
    Greek, Russian, Thai and Chinese golds keep "Lady Gaga", "Virgin Media"). Short Latin words
    (units: "mm", "ft") count for nothing, but cannot make an answer alone ("12th", "1186'da")."""
    own = languages.SCRIPTS.get(lang)
    if not own:
        return True  # a language of unknown script: nothing to compare with
    gold_words = {w for g in golds for _, w in _runs(unicodedata.normalize("NFKC", g).casefold())}
    native = foreign = short = 0
    for s, word in _runs(answer):
        if s in own:
            native += len(word)
        elif s is None or golds and word.casefold() in gold_words:
            continue  # letters of no script (ordinal indicators), or written so in a gold
        elif s != "LATIN":
            return False
        elif word.isupper() or sum(ch.isupper() for ch in word) >= 2 or not golds and word[0].isupper():
            continue  # acronyms, roman numerals and, with no gold to tell, names
        elif len(word) <= 2:
            short += len(word)
        else:
            foreign += len(word)
    if short and not native:
        return False
    return foreign == 0 or foreign < native


def _confidently_other(answer: str, lang: str, candidates) -> bool:
    """Is the detector confident that the answer is another candidate of the same script?"""
    own = languages.SCRIPTS.get(lang, frozenset())
    same_script = {c for c in candidates if languages.SCRIPTS.get(c, frozenset()) & own} | {lang}
    if len(same_script) < 2:
        return False  # e.g. Russian or Thai among the XQuAD languages: the script decides alone
    # The guess is read even for text too short for the query side's fallback (answers are
    # short by design): the confidence threshold is what keeps shared words from failing.
    ranked = languages.rank(answer, same_script)
    return bool(ranked) and ranked[0][0] != lang and ranked[0][1] >= CONFIDENT


def _made_of_a_gold(answer: str, golds, lang: str) -> bool:
    """Is the answer made only of one gold's words (the gold itself, or a part: "Broncos" for
    "Denver Broncos"), all normalised in `lang`?"""
    words = set(normalize(answer, lang).split())
    return bool(words) and any(words <= set(normalize(g, lang).split()) for g in _golds(golds, lang))


def in_question_language(answer: str, lang: str, golds=None, candidates=XQUAD_LANGS, *,
                         golds_by_lang: dict[str, list[str]] | None = None) -> bool | None:
    """Is the answer written the way language `lang` writes it (EVAL.md's "Lang")? None when
    there is nothing to judge: empty answers and answers without letters (numbers, dates).

    `golds` are the question's gold answers in `lang`; `golds_by_lang`, where known (XQuAD's
    parallel golds: the eval, the GRPO examples), those of every language, `lang`'s entry
    counting as `golds`. The app has neither, and the detector alone judges within one script.

    - The question language's gold (normalised) passes, and so does an answer made only of a
      gold's words ("Broncos" for "Denver Broncos"): the language writes these words so.
    - An answer made, by the same rule, of another language's gold (normalised in that
      language), and of no gold of `lang`, fails: it is written the way that language writes
      it (the Turkish gold "Varşova" for an English question whose gold is "Warsaw"), though
      a detector cannot place it.
    - An answer mostly in a script `lang` does not use fails (see `_in_own_script` for the
      acronyms and names that do not count against it).
    - Within one script, the answer fails only when the detector, restricted to the candidates
      of that script, is confident (`CONFIDENT`) that it is another of them: names and terms
      shared by languages of one script ("Denver Broncos", "Lady Gaga") pass.
    """
    answer = unicodedata.normalize("NFKC", answer or "")
    if not _has_letters(answer):
        return None
    golds_by_lang = golds_by_lang or {}
    golds = _golds([*(golds or ()), *golds_by_lang.get(lang, ())], lang)
    if _made_of_a_gold(answer, golds, lang):
        return True
    if any(_made_of_a_gold(answer, other, m) for m, other in golds_by_lang.items() if m != lang):
        return False
    if not _in_own_script(answer, lang, golds):
        return False
    return not _confidently_other(answer, lang, candidates)


def score_answer(pred: str, golds, lang: str, golds_by_lang: dict[str, list[str]] | None = None) -> dict:
    """Every QA metric of one answer. None means "not applicable" and is left out of means:
    gold-based metrics when there is no usable gold, em_any without parallel golds, lang
    for answers with no letters. The parallel golds, when given, also judge the language: an
    answer made of another language's gold and of none of `lang`'s fails it."""
    pred = pred or ""
    has_gold = bool(_golds(golds, lang))
    ok = in_question_language(pred, lang, golds, tuple(golds_by_lang) if golds_by_lang else XQUAD_LANGS,
                              golds_by_lang=golds_by_lang)
    return {
        "em": em(pred, golds, lang) if has_gold else None,
        "f1": f1(pred, golds, lang) if has_gold else None,
        "fem": fem(pred, golds, lang) if has_gold else None,
        "c3r": c3r(pred, golds, lang) if has_gold else None,
        "em_any": em_any(pred, golds_by_lang) if golds_by_lang else None,
        "lang": None if ok is None else float(ok),
    }


def mean_scores(scores: list[dict]) -> dict:
    """Mean of each numeric key over the dicts where it is not None, plus `n` (number of
    dicts). A key that some dicts skip also gets `n_<key>`, the count it was averaged over;
    a key that every dict skips averages to None."""
    out: dict = {"n": len(scores)}
    keys = list(dict.fromkeys(k for s in scores for k in s))
    for key in keys:
        values = [s[key] for s in scores if isinstance(s.get(key), (int, float))]
        if not values and any(s.get(key) is not None for s in scores):
            continue  # not a numeric key (e.g. a label): nothing to average
        out[key] = sum(values) / len(values) if values else None
        if len(values) != len(scores):
            out[f"n_{key}"] = len(values)
    return out
