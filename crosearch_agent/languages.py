"""Language codes, names and query-language detection.

`detect(text, candidates)` answers "which of the indexed languages is this question in?".
It is restricted to the candidates (the languages that have an index), which is what makes
short questions reliable, and it says when it cannot tell: very short or mixed input gets
`fallback=True`, meaning "search every language", with the reason spelt out for the UI.
"""
from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

# The 12 XQuAD languages, the project's default set.
XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")

NAMES = {
    "ar": "Arabic", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi",
    "hu": "Hungarian", "it": "Italian", "ja": "Japanese", "km": "Khmer", "ko": "Korean",
    "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "sw": "Swahili", "th": "Thai",
    "tr": "Turkish", "vi": "Vietnamese", "zh": "Chinese",
}

# Languages written without spaces between words: text lengths and metric tokens count
# characters for these (as MKQA's official scorer does).
CHARACTER_LANGS = frozenset({"zh", "ja", "th"})

MIN_LETTERS = 4        # fewer letters than this is too short to tell a language
MIN_CONFIDENCE = 0.60  # below this the text is likely mixed; search everywhere

# The scripts each language is written in, named as Unicode's character names begin
# ("LATIN SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-4E2D"). The answer-language check compares
# an answer's letters with these.
_LATIN = frozenset({"LATIN"})
SCRIPTS = {
    **dict.fromkeys(("da", "de", "en", "es", "fi", "fr", "hu", "id", "it", "ms", "nl", "no", "pl",
                     "pt", "ro", "sv", "sw", "tr", "vi"), _LATIN),
    "ar": frozenset({"ARABIC"}), "bn": frozenset({"BENGALI"}), "el": frozenset({"GREEK"}),
    "he": frozenset({"HEBREW"}), "hi": frozenset({"DEVANAGARI"}), "ja": frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    "km": frozenset({"KHMER"}), "ko": frozenset({"HANGUL", "CJK"}), "ru": frozenset({"CYRILLIC"}),
    "te": frozenset({"TELUGU"}), "th": frozenset({"THAI"}), "zh": frozenset({"CJK"}),
}
# Letters named without a script ("MODIFIER LETTER APOSTROPHE", "FEMININE ORDINAL INDICATOR")
# belong to no language; a few scripts' letters are named otherwise.
_NO_SCRIPT = frozenset({"MODIFIER", "FEMININE", "MASCULINE"})
_SCRIPT_ALIASES = {"IDEOGRAPHIC": "CJK", "KATAKANA-HIRAGANA": "KATAKANA"}


def script(letter: str) -> str | None:
    """The script of one letter ("LATIN", "CYRILLIC", "CJK", ...), None for letters of none."""
    word = unicodedata.name(letter, "").split(" ", 1)[0]
    if not word or word in _NO_SCRIPT:
        return None
    return _SCRIPT_ALIASES.get(word, word)


def name(code: str) -> str:
    return NAMES.get(code, code)


@dataclass(frozen=True)
class Detection:
    lang: str                # best guess (also the language the answer should be in)
    confidence: float        # probability among the candidates, 0..1
    fallback: bool = False   # True: too short or mixed to trust; search all languages
    reason: str = ""         # human-readable explanation when fallback is True


def _letters(text: str) -> int:
    return sum(1 for ch in text if unicodedata.category(ch).startswith("L"))


@functools.lru_cache(maxsize=32)
def _py3langid(candidates: tuple[str, ...]):
    # One identifier per candidate set: set_languages() mutates it, so sharing one
    # identifier across candidate sets would not be thread-safe.
    from py3langid import langid

    ident = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
    known = [c for c in candidates if c in set(ident.labels)]
    ident.set_languages(known or None)
    return ident


def _rank_py3langid(text: str, candidates: tuple[str, ...]) -> list[tuple[str, float]]:
    return [(lang, float(p)) for lang, p in _py3langid(candidates).rank(text)]


_LANGDETECT_CODES = {"zh-cn": "zh", "zh-tw": "zh"}


def _rank_langdetect(text: str, candidates: tuple[str, ...]) -> list[tuple[str, float]]:
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # langdetect is random unless seeded
    try:
        found = detect_langs(text)
    except LangDetectException:
        return []
    probs: dict[str, float] = {}
    for item in found:
        code = _LANGDETECT_CODES.get(item.lang, item.lang)
        if code in candidates:
            probs[code] = probs.get(code, 0.0) + item.prob
    total = sum(probs.values())
    return sorted(((c, p / total) for c, p in probs.items()), key=lambda x: -x[1]) if total else []


METHODS = {"py3langid": _rank_py3langid, "langdetect": _rank_langdetect}


def rank(text: str, candidates, method: str = "py3langid") -> list[tuple[str, float]]:
    """The candidates by probability for `text`, best first, with no fallback rules; empty
    when there are no letters."""
    return METHODS[method](text, tuple(sorted(set(candidates)))) if _letters(text) else []


def detect(text: str, candidates=XQUAD_LANGS, method: str = "py3langid") -> Detection:
    """The language of `text` among `candidates`, with a confidence and a fallback flag."""
    candidates = tuple(sorted(set(candidates)))
    if not candidates:
        raise ValueError("detect() needs at least one candidate language")
    if method not in METHODS:
        raise ValueError(f"unknown language detector {method!r}; choose one of {sorted(METHODS)}")
    ranked = METHODS[method](text, candidates) if _letters(text) else []
    if not ranked:
        default = "en" if "en" in candidates else candidates[0]
        return Detection(default, 0.0, True, "no letters to identify a language; searching all languages")
    lang, confidence = ranked[0]
    if _letters(text) < MIN_LETTERS:
        return Detection(lang, confidence, True, f"too short to identify reliably (guess: {name(lang)}); searching all languages")
    if confidence < MIN_CONFIDENCE:
        runner_up = name(ranked[1][0]) if len(ranked) > 1 else "another language"
        return Detection(lang, confidence, True, f"looks mixed ({name(lang)} {confidence:.0%}, {runner_up} next); searching all languages")
    halves = _halves(text)
    if halves:
        first, second = (METHODS[method](h, candidates) for h in halves)
        if first and second and first[0][0] != second[0][0] and min(first[0][1], second[0][1]) >= HALF_CONFIDENCE:
            return Detection(lang, confidence, True, f"looks mixed ({name(first[0][0])} and {name(second[0][0])}); searching all languages")
    return Detection(lang, confidence)


HALF_CONFIDENCE = 0.90


def _halves(text: str) -> tuple[str, str] | None:
    """The two halves of a text long enough for each half to be identified on its own."""
    words = text.split()
    if len(words) >= 4:
        mid = len(words) // 2
        return " ".join(words[:mid]), " ".join(words[mid:])
    return None
