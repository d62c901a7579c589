"""Cross-lingual retrieval: search several language indexes, align translations, fuse by rank.

One query vector searches each language's index (the embedder puts every language in one
space). The candidates are then *aligned*: passages in different languages whose vectors
are close enough to be translations of each other become one `Evidence` item listing every
language and passage it was found in. Items are ranked by reciprocal rank fusion (RRF) of
their members' per-language ranks, not by raw cosine: raw scores are not comparable across
indexes (an embedder scores text in the query's own language higher), while ranks are. A
fact found in three languages collects three votes.

Callers decide the turn strategy: the agent searches the query language first (local),
then the others (global expansion); the retrieval evaluation's `aligned` method searches
all of them in one call.

Searching (`Retriever.language_hits`: each language's top hits and their stored vectors) and
fusing (`fuse`: alignment and rank fusion over such hits) are separate steps, so that hits
found elsewhere fuse the same way: `spread.SpreadRetriever` gathers them from retrieval
services that each hold some of the languages. Both live in `fusion`.
"""
from __future__ import annotations

import numpy as np

from crosearch_agent.config import ALIGN_THRESHOLD
from crosearch_agent.evidence import Evidence, Hit
from crosearch_agent.fusion import DEPTH, LanguageHits, fuse, pool, vote
from crosearch_agent.store import Collection, Passage

STATS_DEPTH = 50  # hits per language used to standardise its scores


class Retriever:
    def __init__(self, collection: Collection, embedder, rrf_k: int = 60,
                 align_threshold: float = ALIGN_THRESHOLD, score_weight: float = 2.0, depth: int = DEPTH):
        self.collection, self.embedder = collection, embedder
        self.rrf_k, self.align_threshold, self.score_weight, self.depth = rrf_k, align_threshold, score_weight, depth

    @property
    def languages(self) -> list[str]:
        return self.collection.languages

    def _hits(self, qvecs: np.ndarray, lang: str, k: int) -> list[list[tuple[Hit, int]]]:
        """Per query: (hit, position in the index) for the top k of one language."""
        scores, positions = self.collection.search(lang, qvecs, max(k, STATS_DEPTH))
        passages = self.collection.passages[lang]
        out = []
        for srow, prow in zip(scores, positions):
            valid = srow[prow >= 0]
            mean, std = (float(valid.mean()), float(valid.std())) if len(valid) > 1 else (0.0, 1.0)
            out.append([(Hit(passages[p], float(s), r + 1, (float(s) - mean) / (std or 1.0)), int(p))
                        for r, (s, p) in enumerate(zip(srow[:k], prow[:k])) if p >= 0])
        return out

    def _check(self, languages) -> list[str]:
        languages = list(dict.fromkeys(languages or self.languages))
        unknown = [l for l in languages if l not in self.collection.indexes]
        if unknown:
            raise ValueError(f"no index for language(s) {unknown}; this collection has {self.languages}")
        return languages

    def language_hits(self, qvecs: np.ndarray, languages=None, depth: int = DEPTH,
                      vectors: bool = True) -> list[list[LanguageHits]]:
        """Per query, each language's top `depth` hits (with their stored vectors unless
        `vectors` is False), in the order of `languages`: what `fuse` and `pool` combine, and
        what a retrieval service holding some of the languages sends back."""
        languages = self._check(languages)
        per_lang = {lang: self._hits(qvecs, lang, depth) for lang in languages}

        def stored(lang: str, pairs) -> np.ndarray | None:
            if not vectors:
                return None
            if not pairs:
                return np.zeros((0, self.collection.indexes[lang].d), dtype=np.float32)
            return np.stack([self.collection.vector(lang, pos) for _, pos in pairs])

        return [[LanguageHits(lang, [h for h, _ in per_lang[lang][q]], stored(lang, per_lang[lang][q]))
                 for lang in languages] for q in range(len(qvecs))]

    def search(self, query: str, languages=None, k: int = 5, query_lang: str | None = None) -> list[Evidence]:
        """Aligned, rank-fused evidence for one query over `languages` (default: all)."""
        qvec = self.embedder.encode_queries([query], progress=False)
        return self.search_vectors(qvec, languages, k, query_lang)[0]

    def search_vectors(self, qvecs: np.ndarray, languages=None, k: int = 5,
                       query_lang: str | None = None) -> list[list[Evidence]]:
        """`search` for a batch of already-encoded queries (one FAISS call per language)."""
        return [self.fuse(found, k, query_lang) for found in self.language_hits(qvecs, languages, max(k, self.depth))]

    def fuse(self, found: list[LanguageHits], k: int, query_lang: str | None) -> list[Evidence]:
        """`fuse` with this retriever's settings."""
        return fuse(found, k, query_lang, rrf_k=self.rrf_k, align_threshold=self.align_threshold,
                    score_weight=self.score_weight)

    def vote(self, hit: Hit) -> float:
        """One member's contribution to its item's fused score (weighted RRF)."""
        return vote(hit, self.rrf_k, self.score_weight)

    # -------------------------------------------------------------- baselines

    def concat(self, query: str, languages=None, k: int = 5) -> list[Evidence]:
        """`concat_vectors` for one query given as text (the interface `RemoteRetriever` shares)."""
        return self.concat_vectors(self.embedder.encode_queries([query], progress=False), languages, k)[0]

    def doc_ids(self, lang: str) -> set[str]:
        """The source keys (`Passage.doc_id`) one language's index holds."""
        return {p.doc_id for p in self.collection.passages[lang]}

    def concat_vectors(self, qvecs: np.ndarray, languages=None, k: int = 5) -> list[list[Evidence]]:
        """The vanilla multilingual baseline: top k of every index, merged by raw cosine."""
        return [pool(found, k) for found in self.language_hits(qvecs, languages, k, vectors=False)]


def load_retriever(settings, embedder=None, verify: bool = True) -> Retriever:
    """The retriever for `settings.collection`, loading the embedder unless one is given.

    With `settings.retriever_url`, a client of that running retrieval service instead
    (same search interface, nothing loaded here); with `settings.retriever_urls`, a client of
    several services that each hold some of the languages (`spread.SpreadRetriever`).
    """
    if getattr(settings, "retriever_url", None) and getattr(settings, "retriever_urls", None):
        raise ValueError("give --retriever-url (one service) or --retriever-urls (languages spread over several), not both")
    if getattr(settings, "retriever_urls", None):
        from crosearch_agent.config import parse_services
        from crosearch_agent.spread import SpreadRetriever

        return SpreadRetriever(parse_services(settings.retriever_urls), settings.languages, rrf_k=settings.rrf_k,
                               align_threshold=settings.align_threshold, score_weight=settings.score_weight)
    if getattr(settings, "retriever_url", None):
        from crosearch_agent.remote import RemoteRetriever

        return RemoteRetriever(settings.retriever_url, settings.languages)
    from crosearch_agent.embedder import Embedder
    from crosearch_agent.store import collection_dir, load_collection

    embedder = embedder or Embedder(settings.embedder)
    collection = load_collection(collection_dir(settings.collection), embedder.id, settings.languages, verify,
                                 nprobe=getattr(settings, "nprobe", None), rerank=getattr(settings, "rerank", None))
    return Retriever(collection, embedder, settings.rrf_k, settings.align_threshold, settings.score_weight)
