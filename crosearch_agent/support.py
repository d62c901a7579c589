"""Which passage an answer came from, and whether the language versions of it agree.

`find_support` looks for the passage behind an answer among everything the agent's searches
returned, trying in turn:

1. `citation`: the policy's last thought names a document ("Doc 2 (German) says: 1263."); the
   cited document of the last search that holds the quoted words (or the answer) supports it;
2. `verbatim`: a passage sentence holding the answer, normalised as the metrics normalise it;
3. `number`: a sentence holding every number of the answer, whichever digits each script
   writes them in (Arabic-Indic, Devanagari, Thai, full-width...);
4. `meaning`: the sentence closest to "question + answer" in the embedder's multilingual
   space, when it is close enough (this is how a translated name is found).

Nothing found means no support, which the app says plainly. `agreement` then compares, for
numbers and dates, what each language's version of the supporting passage (the other members
of its aligned evidence item) says at the supporting sentence.

What it misses: numbers written as words ("four", "أربعة") or CJK numerals, calendars other
than the Thai Buddhist era, and names that the embedder does not bring close.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

from crosearch_agent.languages import CHARACTER_LANGS
from crosearch_agent.metrics import normalize

# A sentence ends at . ! ? (and their CJK, Arabic and Devanagari forms) or a line break.
SENTENCE_END = re.compile(r"(?<=[.!?。！？؟।॥])\s+|(?<=[。！？])|\n+")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
CITATION = re.compile(r"\bDoc\s*(\d+)\b[^:]*?(?:says|:)\s*:?\s*(.*)", re.IGNORECASE | re.DOTALL)
# Cosine of e5 "query: question answer" to a "passage: sentence". Measured on 120 XQuAD dev
# questions answered with their gold: above 0.86, 12 of 15 meaning matches were the gold
# paragraph (above 0.80: 37 of 50).
MEANING_THRESHOLD = 0.86
# Cosine of e5 "passage:" vectors of an answer and the cited sentence it was translated from.
# A first look on 9 of the app's answers: translated names 0.83-0.90, an unrelated one 0.78
# (and a correct translation at 0.81 is lost): rough, hence used only to accept a citation.
CITATION_MEANING = 0.83
BUDDHIST_ERA = 543        # Thai years: 2559 BE = 2016 CE
VERSION_THRESHOLD = 0.9   # cosine of two e5 "passage:" sentences that are translations of each other


@dataclass
class Support:
    """A passage that supports an answer, and the sentence that does."""
    lang: str
    doc_id: str
    passage_id: str
    title: str
    search: int          # which search of the conversation (1-based) returned it
    rank: int            # the evidence item's rank in that search
    quote: str           # the supporting sentence, as the passage writes it
    start: int           # where the quote starts in the passage text
    how: str             # citation | verbatim | number | meaning
    also_in: list[str] = field(default_factory=list)  # the languages of the item's other versions
    versions: dict[str, str] = field(default_factory=dict)  # language -> passage id of each version

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Agreement:
    """What each language's version says at the supporting sentence (numbers and dates)."""
    status: str = "unknown"                     # agree | disagree | unknown
    by_language: dict[str, str] = field(default_factory=dict)
    differing: list[str] = field(default_factory=list)   # the languages whose value differs
    passages: dict[str, str] = field(default_factory=dict)  # language -> id of the passage read
    quotes: dict[str, str] = field(default_factory=dict)    # language -> the sentence read there

    def as_dict(self) -> dict:
        return {"status": self.status, "by_language": dict(self.by_language), "differing": list(self.differing),
                "passages": dict(self.passages), "quotes": dict(self.quotes)}


# ---------------------------------------------------------------- text pieces

def ascii_digits(text: str) -> str:
    """Every decimal digit as 0-9 (Arabic-Indic, Devanagari, Thai, full-width...); the Arabic
    decimal and thousands separators as . and ,."""
    out = []
    for ch in text:
        d = unicodedata.decimal(ch, None)
        out.append(str(d) if d is not None else {"٫": ".", "٬": ","}.get(ch, ch))
    return "".join(out)


def numbers(text: str) -> list[str]:
    """The numbers in a text, as plain digits: thousands separators dropped ("1,000" and
    "1.000" -> "1000"), a decimal part kept ("3.5")."""
    out = []
    for m in NUMBER.finditer(ascii_digits(text)):
        parts = re.split(r"[.,]", m.group())
        if len(parts) > 1 and all(len(p) == 3 for p in parts[1:]):
            out.append("".join(parts))
        elif len(parts) == 2:
            out.append(f"{parts[0]}.{parts[1]}")
        else:
            out.extend(parts)
    return out


def _digits(number: str) -> int:
    """How many digits a number has before its decimal point."""
    return len(number.split(".")[0])


def same_number(a: str, b: str, langs: tuple[str, str] = ("", "")) -> bool:
    """Equal, or the same year in the Gregorian and the Thai Buddhist calendar."""
    if a == b:
        return True
    if "th" in langs and a.isdigit() and b.isdigit():
        return abs(int(a) - int(b)) == BUDDHIST_ERA
    return False


def sentences(text: str) -> list[tuple[int, str]]:
    """(start, sentence) pieces of a passage, whitespace trimmed."""
    out, at = [], 0
    for piece in SENTENCE_END.split(text):
        start = text.find(piece, at) if piece else at
        at = start + len(piece)
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((start + lead, piece.strip()))
    return out or [(0, text)]


def _holds(haystack: str, needle: str, lang: str) -> bool:
    """Does the (normalised) text hold the (normalised) words: as whole words where the
    script has spaces, anywhere in scripts written without them?"""
    n, h = normalize(needle, lang), normalize(haystack, lang)
    if not n:
        return False
    if lang in CHARACTER_LANGS:
        return n.replace(" ", "") in h.replace(" ", "")
    return f" {n} " in f" {h} "


# ---------------------------------------------------------------- the evidence a result saw

@dataclass
class _Candidate:
    search: int
    rank: int
    item: object   # Evidence
    hit: object    # Hit (one language's passage)


def _searches(result) -> list[list]:
    """The evidence items of each search, in order."""
    return [list(s.items) for s in result.steps if s.kind == "evidence"]


def _candidates(result) -> list[_Candidate]:
    """Every passage the searches returned, in search and rank order: first the versions the
    policy was shown, then the other versions of the same items."""
    shown, others, seen = [], [], set()
    for search, items in enumerate(_searches(result), 1):
        for item in items:
            first = item.shown(result.lang)
            for hit in item.members:
                if hit.passage.id not in seen:
                    seen.add(hit.passage.id)
                    (shown if hit is first else others).append(_Candidate(search, item.rank, item, hit))
    return shown + others


def _widest_item(result, passage_id: str):
    """Of the evidence items that hold a passage, the one with the most language versions
    (a local search finds it alone; the global search aligns its translations to it)."""
    items = [item for items in _searches(result) for item in items
             if any(h.passage.id == passage_id for h in item.members)]
    return max(items, key=lambda item: len(item.members), default=None)


def _support(c: _Candidate, start: int, quote: str, how: str, result) -> Support:
    p = c.hit.passage
    item = _widest_item(result, p.id) or c.item
    versions = {p.lang: p.id}
    for h in item.members:  # the item's first passage of each other language
        versions.setdefault(h.passage.lang, h.passage.id)
    return Support(p.lang, p.doc_id, p.id, p.title, c.search, c.rank, quote, start, how, list(versions)[1:], versions)


def _sentence_with(c: _Candidate, test) -> tuple[int, str] | None:
    return next(((start, s) for start, s in sentences(c.hit.passage.text) if test(s, c.hit.passage.lang)), None)


def _last_thought(result) -> str:
    thoughts = [s.text for s in result.steps if s.kind == "think"]
    return thoughts[-1] if thoughts else ""


# ---------------------------------------------------------------- support

def find_support(result, embedder=None) -> list[Support]:
    """The passages that support the result's answer (best first; [] when none does)."""
    answer = (result.answer or "").strip()
    if not answer:
        return []
    candidates = _candidates(result)
    if not candidates:
        return []
    found = (_by_citation(result, answer, candidates, embedder) or _by_words(result, answer, candidates)
             or _by_numbers(result, answer, candidates))
    if found:
        return found
    return _by_meaning(result, answer, candidates, embedder) if embedder is not None else []


def _by_citation(result, answer: str, candidates, embedder=None) -> list[Support]:
    """The cited document's sentence holding the quoted words, when the answer is what that
    sentence says: its words or numbers are in it, or (an answer translated from it) its
    meaning is close to it (`CITATION_MEANING`; without an embedder, words only)."""
    m = CITATION.search(_last_thought(result))
    if not m:
        return []
    number, quote = int(m.group(1)), m.group(2).strip()
    quote = re.split(r"(?<=\S)\.\s", quote + " ")[0].strip().rstrip(".")  # up to the thought's next sentence
    searches = _searches(result)
    for search in range(len(searches), 0, -1):  # the policy read the last search's documents last
        items = searches[search - 1]
        if not 1 <= number <= len(items):
            continue
        item = items[number - 1]
        shown = item.shown(result.lang)
        c = _Candidate(search, item.rank, item, shown)

        def holds_answer(sentence, lang):
            return _holds(sentence, answer, lang) or _numbers_in(answer, sentence, lang)

        hit = _sentence_with(c, holds_answer)
        if hit is None and quote:
            hit = _sentence_with(c, lambda s, lang: _holds(s, quote, lang) or _numbers_in(quote, s, lang))
            if hit is not None and not (holds_answer(quote, shown.passage.lang) or _close(answer, hit[1], embedder)):
                hit = None  # a quote the answer does not come from
        if hit:
            return [_support(c, *hit, "citation", result)]
    return []


def _close(answer: str, sentence: str, embedder) -> bool:
    if embedder is None:
        return False
    vectors = embedder.encode_passages([answer, sentence])
    return float(vectors[0] @ vectors[1]) >= CITATION_MEANING


def _numbers_in(words: str, sentence: str, lang: str) -> bool:
    want = numbers(words)
    have = numbers(sentence)
    return bool(want) and all(any(same_number(w, h, (lang, lang)) for h in have) for w in want)


def _by_words(result, answer: str, candidates) -> list[Support]:
    for c in candidates:
        hit = _sentence_with(c, lambda s, lang: _holds(s, answer, lang))
        if hit:
            return [_support(c, *hit, "verbatim", result)]
    return []


def _by_numbers(result, answer: str, candidates) -> list[Support]:
    want = numbers(answer)
    if not want:
        return []
    for c in candidates:
        lang = c.hit.passage.lang
        hit = _sentence_with(c, lambda s, _: all(any(same_number(w, h, (result.lang, lang)) for h in numbers(s))
                                                 for w in want))
        if hit:
            return [_support(c, *hit, "number", result)]
    return []


def _by_meaning(result, answer: str, candidates, embedder, limit: int = 96) -> list[Support]:
    import numpy as np

    pieces = [(c, start, s) for c in candidates for start, s in sentences(c.hit.passage.text)][:limit]
    if not pieces:
        return []
    query = embedder.encode_queries([f"{result.question} {answer}"])[0]
    vectors = embedder.encode_passages([s for _, _, s in pieces])
    scores = np.asarray(vectors) @ np.asarray(query)
    best = int(np.argmax(scores))
    if scores[best] < MEANING_THRESHOLD:
        return []
    c, start, s = pieces[best]
    return [_support(c, start, s, "meaning", result)]


def explain(result, embedder=None) -> tuple[list[Support], Agreement]:
    """Support and agreement of a result's answer, also set on its answer step (for the app's
    and the API's views of it)."""
    found = find_support(result, embedder)
    agreed = agreement(found[0] if found else None, result, embedder=embedder)
    step = next((s for s in result.steps if s.kind == "answer"), None)
    if step is not None:
        step.support, step.agreement = found, agreed
    return found, agreed


# ---------------------------------------------------------------- agreement

def agreement(support: Support | None, result, answer: str | None = None, embedder=None) -> Agreement:
    """Compare the numbers of the supporting sentence across the language versions of the
    supporting passage.

    A language's version is every passage of the conversation's evidence that shares the
    supporting passage's source key (`doc_id`, which translations share in this project's
    collections): a long document is cut into passages at different places in each language,
    so the sentence that matters may sit in a passage of another evidence item, or another
    search. Where no other passage shares the key, the versions are the supporting item's
    members whose corresponding sentence is a near translation of the supporting one (cosine
    >= `VERSION_THRESHOLD`; the aligner also groups passages that are merely about the same
    thing).

    The values compared are the answer's numbers, else the supporting sentence's. A version
    agrees when its passages hold them all. It disagrees when it lacks one and its sentence
    corresponding to the supporting one holds a number of the same size that neither the
    supporting language's passages nor any agreeing version hold (a number from another part
    of the document is in those). Otherwise it says nothing we can read. The corresponding
    sentence is the closest in the embedder's space, else the one sharing most numbers, else
    the one at the same position."""
    if support is None:
        return Agreement()
    item = _widest_item(result, support.passage_id)
    keys = numbers(result.answer if answer is None else answer) or numbers(support.quote)
    if item is None or not keys:
        return Agreement()
    own = next(h.passage for h in item.members if h.passage.id == support.passage_id)
    position = next((i for i, (start, _) in enumerate(sentences(own.text)) if start == support.start), 0)
    versions = _versions_by_language(result, own)
    same_source = len(versions) > 1
    if not same_source:
        versions = {}
        for h in item.members:
            if h.passage.id != own.id:
                versions.setdefault(h.passage.lang, [h.passage])
    out = Agreement(by_language={own.lang: " ".join(keys)}, passages={own.lang: own.id},
                    quotes={own.lang: support.quote})
    known = set(numbers(" ".join(p.text for p in versions.get(own.lang, [own]))))
    lacking = {}
    for lang, passages in versions.items():
        if lang == own.lang:
            continue
        text = " ".join(p.text for p in passages)
        if not same_source:  # a version only if its sentence is a near translation of the quote
            _, closeness, _ = _corresponding(passages, support.quote, position, embedder)
            if closeness is None or closeness < VERSION_THRESHOLD:
                continue
        if all(any(same_number(k, t, (own.lang, lang)) for t in numbers(text)) for k in keys):
            out.by_language[lang] = " ".join(keys)
            out.quotes[lang], out.passages[lang] = _sentence_holding(passages, keys[0], (own.lang, lang))
            known.update(numbers(text))
        else:
            lacking[lang] = passages
    for lang, passages in lacking.items():
        sentence, _, passage = _corresponding(passages, support.quote, position, embedder)
        # A different value is a number of the size of a compared one (small counts are often
        # written as words in one language) that no agreeing text holds.
        new = [n for n in numbers(sentence) if any(_digits(n) == _digits(k) for k in keys)
               and not any(same_number(n, o, (own.lang, lang)) for o in known)]
        if new:
            out.by_language[lang] = " ".join(dict.fromkeys(new))
            out.passages[lang], out.quotes[lang] = passage.id, sentence
            out.differing.append(lang)
    if out.differing:
        out.status = "disagree"
    elif len(out.by_language) > 1:
        out.status = "agree"
    return out


def _sentence_holding(passages: list, number: str, langs: tuple[str, str]) -> tuple[str, str]:
    """(the first sentence of `passages` holding `number`, the id of its passage)."""
    for p in passages:
        for _, sentence in sentences(p.text):
            if any(same_number(number, n, langs) for n in numbers(sentence)):
                return sentence, p.id
    return "", passages[0].id


def _versions_by_language(result, own) -> dict[str, list]:
    """language -> the evidence passages sharing `own`'s source key, in search and rank order
    (those of the widest item first)."""
    item = _widest_item(result, own.id)
    out: dict[str, list] = {}
    seen = set()
    everything = [h.passage for h in item.members] + [h.passage for items in _searches(result)
                                                      for it in items for h in it.members]
    for p in everything:
        if p.doc_id == own.doc_id and p.id not in seen:
            seen.add(p.id)
            out.setdefault(p.lang, []).append(p)
    return out


def _corresponding(passages: list, quote: str, position: int, embedder=None) -> tuple[str, float | None, object]:
    """(the sentence of `passages` that corresponds to `quote`, its cosine to it when measured,
    the passage holding it)."""
    pieces = [(s, p) for p in passages for _, s in sentences(p.text)]
    if embedder is not None:
        import numpy as np

        vectors = np.asarray(embedder.encode_passages([quote] + [s for s, _ in pieces]))
        scores = vectors[1:] @ vectors[0]
        best = int(np.argmax(scores))
        return pieces[best][0], float(scores[best]), pieces[best][1]
    want = set(numbers(quote))
    shared = [len(want & set(numbers(s))) for s, _ in pieces]
    if want and max(shared) > 0:
        s, p = pieces[shared.index(max(shared))]
        return s, None, p
    s, p = pieces[min(position, len(pieces) - 1)]
    return s, None, p
