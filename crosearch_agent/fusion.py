"""Alignment and rank fusion: one language's hits at a time in, aligned evidence out.

`align` groups passages whose vectors are close enough to be translations of one another;
`fuse` turns every language's top hits (`LanguageHits`) into evidence items ranked by
weighted reciprocal rank fusion. Apart from searching, so that hits found anywhere fuse the
same way: this process's indexes (`retriever.Retriever`) or retrieval services that each hold
some of the languages (`spread.SpreadRetriever`, `remote`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crosearch_agent.evidence import Evidence, Hit

DEPTH = 10        # hits per language that take part in alignment and fusion (at least k)


class _Groups:
    """Union-find over candidates that keeps at most one passage per language in a group."""

    def __init__(self, langs: list[str]):
        self.parent = list(range(len(langs)))
        self.langs = [{lang} for lang in langs]

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b and not (self.langs[a] & self.langs[b]):
            self.parent[b] = a
            self.langs[a] |= self.langs[b]


def align(langs: list[str], vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Group candidate indices whose vectors say the same thing in different languages.

    Two passages are linked when they are each other's closest candidate in the other's
    language (mutual nearest neighbours) and their cosine reaches `threshold`: translations
    of one paragraph are closer to each other than to the other paragraphs of the same
    article, while an absolute cosine alone separates them poorly (e5 scores related text
    high). Links are taken most similar first, and a group never holds two passages of one
    language (that would be two different passages, or a duplicate, not a translation).
    """
    n = len(langs)
    if n == 0:
        return []
    sims = vectors @ vectors.T
    lang_arr = np.array(langs)
    best = np.full((n, n), False)  # best[i, j]: j is i's closest candidate in j's language
    for lang in np.unique(lang_arr):
        cols = np.flatnonzero(lang_arr == lang)
        best[np.arange(n), cols[np.argmax(sims[:, cols], axis=1)]] = True
    i, j = np.triu_indices(n, k=1)
    keep = (lang_arr[i] != lang_arr[j]) & best[i, j] & best[j, i] & (sims[i, j] >= threshold)
    i, j = i[keep], j[keep]
    groups = _Groups(langs)
    for a in np.argsort(-sims[i, j], kind="stable"):
        groups.join(int(i[a]), int(j[a]))
    by_root: dict[int, list[int]] = {}
    for x in range(n):
        by_root.setdefault(groups.find(x), []).append(x)
    return list(by_root.values())


@dataclass
class LanguageHits:
    """One language's top hits for one query, with each hit's stored passage vector (what
    alignment compares). The unit fusion works on, wherever the hits were found: this
    process's indexes, or retrieval services that each hold some of the languages."""
    lang: str
    hits: list[Hit]
    vectors: np.ndarray | None = None  # [len(hits), dim] float32; None where only pooled (concat)


def vote(hit: Hit, rrf_k: int, score_weight: float) -> float:
    """One member's contribution to its item's fused score (weighted RRF)."""
    return float(np.exp(score_weight * hit.z)) / (rrf_k + hit.rank)


def fuse(found: list[LanguageHits], k: int, query_lang: str | None, *, rrf_k: int, align_threshold: float,
         score_weight: float) -> list[Evidence]:
    """Aligned, rank-fused evidence from every language's hits, taken in the order given
    (the order of the languages searched: alignment breaks ties by it)."""
    found = [f for f in found if f.hits]
    if not found:
        return []
    hits = [h for f in found for h in f.hits]
    vecs = np.concatenate([f.vectors for f in found]).astype(np.float32, copy=False)
    items = []
    for group in align([h.passage.lang for h in hits], vecs, align_threshold):
        members = sorted((hits[i] for i in group), key=lambda h: (h.passage.lang != query_lang, h.rank, -h.score))
        items.append(Evidence(0, sum(vote(h, rrf_k, score_weight) for h in members), members))
    # Ties (e.g. several rank-1 singletons) go to the query language, then higher cosine.
    items.sort(key=lambda e: (-e.score, e.lang != query_lang, -max(h.score for h in e.members)))
    for r, item in enumerate(items[:k], 1):
        item.rank = r
    return items[:k]


def pool(found: list[LanguageHits], k: int) -> list[Evidence]:
    """The vanilla multilingual baseline: every language's hits merged by raw cosine, top k."""
    hits = sorted((h for f in found for h in f.hits), key=lambda h: -h.score)[:k]
    return [Evidence(r, h.score, [h]) for r, h in enumerate(hits, 1)]
