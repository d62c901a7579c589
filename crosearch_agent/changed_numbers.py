"""A collection where sources disagree, for testing agreement: the XQuAD test paragraphs in all
12 languages, where one language's copy of a number that a question asks for is changed.

For each test paragraph, the first question whose English answer is a number of 2-4 digits
found in the English paragraph and exactly once in some other languages' copies; one of those
languages (chosen by the paragraph, reproducibly) gets that number changed (+3 for a year,
+2 otherwise), written in the same digits as the copy writes it. `python -m indexes.build
--collection xquad-changed` indexes it; `python -m crosearch_agent.eval_agreement`
asks its questions.
"""
from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass, replace

from crosearch_agent import qa_data
from crosearch_agent.languages import XQUAD_LANGS
from crosearch_agent.support import ascii_digits

SPLIT = "test"
_ANSWER = re.compile(r"^\d{2,4}$")


@dataclass(frozen=True)
class Change:
    doc_id: str
    lang: str          # the copy that was changed
    old: str           # the number, in ASCII digits
    new: str
    question_id: str   # the question whose answer it is


def _occurrences(text: str, number: str) -> list[re.Match]:
    return [m for m in re.finditer(r"\d+", text) if ascii_digits(m.group()) == number]


def _in_digits_of(example: str, number: str) -> str:
    """`number` written in the same script's digits as `example`."""
    zero = ord(example[0]) - unicodedata.decimal(example[0])
    return "".join(chr(zero + int(d)) for d in number)


@functools.lru_cache(maxsize=4)
def changes(data_dir=None, langs=XQUAD_LANGS) -> list[Change]:
    paragraphs = {lang: {p.doc_id: p for p in qa_data.load_xquad(lang, data_dir)[0]
                         if qa_data.xquad_split(p.title) == SPLIT} for lang in langs}
    out = []
    for q in qa_data.xquad_questions(["en"], SPLIT, data_dir):
        if not q.answers or not _ANSWER.match(q.answers[0].strip()) or q.doc_id in {c.doc_id for c in out}:
            continue
        old = q.answers[0].strip()
        if not _occurrences(paragraphs["en"][q.doc_id].context, old):
            continue
        new = str(int(old) + (3 if len(old) == 4 else 2))
        candidates = [lang for lang in langs if lang != "en" and q.doc_id in paragraphs[lang]
                      and len(_occurrences(paragraphs[lang][q.doc_id].context, old)) == 1
                      and not _occurrences(paragraphs[lang][q.doc_id].context, new)]
        if candidates:
            pick = int(hashlib.sha256(q.doc_id.encode()).hexdigest(), 16) % len(candidates)
            out.append(Change(q.doc_id, candidates[pick], old, new, q.id))
    return out


def changed_paragraphs(lang: str, data_dir=None) -> list:
    """The paragraphs of `lang` in the collection, with that language's changes applied."""
    chosen = {c.doc_id: c for c in changes(data_dir)}
    out = []
    for p in qa_data.load_xquad(lang, data_dir)[0]:
        if p.doc_id not in chosen:
            continue
        change = chosen[p.doc_id]
        if change.lang == lang:
            [m] = _occurrences(p.context, change.old)
            p = replace(p, context=p.context[:m.start()] + _in_digits_of(m.group(), change.new) + p.context[m.end():])
        out.append(p)
    return out
