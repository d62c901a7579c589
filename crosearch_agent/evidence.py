"""What a search returns, and what searches: the types the agent, the eval, the app and
training share, whichever retriever (in-process or a retrieval service) produced them.

A `Hit` is one passage as one language's index ranked it; an `Evidence` item is one piece of
content found in one or more languages (aligned translations), ranked by fused score. A
`Searcher` is anything the agent can search: `retriever.Retriever` (the indexes in this
process) and `remote.RemoteRetriever` (a retrieval service) both are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from crosearch_agent.store import Passage


@dataclass(frozen=True)
class Hit:
    """One passage as one language's index returned it."""
    passage: Passage
    score: float   # cosine similarity to the query
    rank: int      # 1-based rank in its language's result list
    z: float = 0.0 # the cosine standardised within its language's list (how much it stands out)


@dataclass
class Evidence:
    """One piece of evidence: the same content, found in one or more languages."""
    rank: int
    score: float                               # fused (RRF) score
    members: list[Hit] = field(default_factory=list)  # members[0] is the one shown

    @property
    def lang(self) -> str:
        return self.members[0].passage.lang

    @property
    def languages(self) -> list[str]:
        return [h.passage.lang for h in self.members]

    @property
    def passage_ids(self) -> list[str]:
        return [h.passage.id for h in self.members]

    @property
    def doc_ids(self) -> set[str]:
        return {h.passage.doc_id for h in self.members}

    def shown(self, query_lang: str) -> Hit:
        """The member the policy reads: the query language's version if the item has one
        (the policy reads that best), else the best-ranked one."""
        return next((h for h in self.members if h.passage.lang == query_lang), self.members[0])

    def read_first(self, query_lang: str) -> list[Hit]:
        """The members with the one the policy reads (`shown`) first, the others in rank order."""
        read = self.shown(query_lang)
        return [read] + [h for h in self.members if h is not read]

    @property
    def title(self) -> str:
        return self.members[0].passage.title

    @property
    def text(self) -> str:
        return self.members[0].passage.text


class EvidenceList(list):
    """A search's evidence items (a list of `Evidence`, equal to a plain list of the same
    items), and the languages that could not be searched, each with why (e.g. "service
    unreachable"): a retrieval service that is down costs only its languages."""

    def __init__(self, items=(), missing: dict[str, str] | None = None):
        super().__init__(items)
        self.missing = dict(missing or {})


def not_searched(items) -> dict[str, str]:
    """Language -> why it was not searched, for any searcher's result (a plain list: none)."""
    return dict(getattr(items, "missing", None) or {})


# The most items one search may ask for (the retrieval service's limit too).
MAX_K = 50


def without(items, drop, k: int) -> EvidenceList:
    """The first `k` items none of whose passages `drop(passage)` is true for, ranked anew; the
    languages a retrieval service could not search stay named."""
    kept = [e for e in items if not any(drop(h.passage) for h in e.members)][:k]
    for rank, item in enumerate(kept, 1):
        item.rank = rank
    return EvidenceList(kept, not_searched(items))


def unseen(items, shown: set[str], k: int) -> EvidenceList:
    """The first `k` items none of whose passages (ids) is in `shown`: a later search of one
    conversation brings new evidence, not what an earlier one showed again (an aligned item
    holding a shown passage is the same content in other words)."""
    return without(items, lambda passage: passage.id in shown, k)


@runtime_checkable
class Searcher(Protocol):
    """What the agent needs of a retriever (the eval's oracle answers `search` alone: its
    one method searches once)."""

    @property
    def languages(self) -> list[str]: ...

    def search(self, query: str, languages=None, k: int = 5, query_lang: str | None = None) -> list[Evidence]:
        """Aligned, rank-fused evidence for one query over `languages` (default: all)."""

    def concat(self, query: str, languages=None, k: int = 5) -> list[Evidence]:
        """The baseline: every language's hits pooled and sorted by raw score, not aligned."""
