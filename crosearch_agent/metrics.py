"""QA answer metrics, exactly as EVAL.md defines them, with per-language normalisation.

Every metric compares the *normalised* prediction with the normalised gold answers and keeps
the best gold. Normalisation is: Unicode NFKC, casefold, punctuation (category P*) to spaces,
English articles dropped (English only: "a" is a word in Spanish or Romanian), whitespace
collapsed. Tokens are whitespace-separated words, except in zh, ja and th, written without
spaces, where every non-space character is a token (as MKQA's official scorer does).

`score_answer` gives every metric of one answer as a dict; `mean_scores` averages such dicts.
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


def answer_language_ok(pred: str, lang: str, candidates=XQUAD_LANGS) -> bool | None:
    """Is the answer detected as `lang` among `candidates`? None when there is nothing to
    detect: empty answers and answers without letters (numbers, numeric dates)."""
    if not pred or not _has_letters(pred):
        return None
    candidates = tuple(sorted(set(candidates) | {lang}))
    # The detector's guess is used even when it flags the text as short: answers are short
    # by design, and restricting to the candidates keeps the guess meaningful.
    return languages.detect(pred, candidates).lang == lang


def score_answer(pred: str, golds, lang: str, golds_by_lang: dict[str, list[str]] | None = None) -> dict:
    """Every QA metric of one answer. None means "not applicable" and is left out of means:
    gold-based metrics when there is no usable gold, em_any without parallel golds, lang
    for answers with no letters."""
    pred = pred or ""
    has_gold = bool(_golds(golds, lang))
    ok = answer_language_ok(pred, lang, tuple(golds_by_lang) if golds_by_lang else XQUAD_LANGS)
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
