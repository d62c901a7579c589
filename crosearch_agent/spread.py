"""Languages spread over machines: one collection served by several retrieval services.

Each service holds some of a collection's languages
(`python -m crosearch_agent.serve_retrieval --collection NAME --languages de,en,zh`).
`SpreadRetriever` takes a map of languages to service URLs
(`--retriever-urls "de,en,zh=http://a:8100;ar,hi,th=http://b:8100"`), asks every service
concerned at once for its languages' raw hits (scores, ranks and the passages' stored vectors,
`POST /hits`) and aligns and fuses them here with `fusion.fuse`: the very function the
in-process retriever runs, over the same hits in the same order, so the evidence is the same.

A service that is down, too slow or failing costs only its languages: the others' evidence
comes back as an `EvidenceList` whose `missing` names the languages not searched and why,
which the agent's evidence step (and so the app and `/ask`) reports.
"""
from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from crosearch_agent.config import ALIGN_THRESHOLD
from crosearch_agent.evidence import EvidenceList
from crosearch_agent.fusion import DEPTH, LanguageHits, fuse, pool
from crosearch_agent.remote import RetrievalServiceError, ServiceClient

TIMEOUT_S = 30.0          # for an answer: a service's first query also loads its tokenizer
CONNECT_TIMEOUT_S = 3.0   # for a connection: a machine that is off costs its languages quickly
WORKERS_PER_SERVICE = 4   # requests in flight to one service (the app asks several questions at once)


class SpreadRetriever:
    """`Retriever`'s search interface over retrieval services that each hold some languages."""

    def __init__(self, services: dict[str, list[str]], languages=None, *, rrf_k: int = 60,
                 align_threshold: float = ALIGN_THRESHOLD, score_weight: float = 2.0, depth: int = DEPTH,
                 timeout: float = TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S, log=None):
        """`services`: {url: [languages]} (`parse_services`); `languages`: search only these.
        The fusion settings are this process's, as `Retriever` takes them. Raises when no
        service answers, or when one answers but does not hold what the map says it does."""
        self.rrf_k, self.align_threshold, self.score_weight, self.depth = rrf_k, align_threshold, score_weight, depth
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        owner = {lang: url.rstrip("/") for url, langs in services.items() for lang in langs}
        unknown = [l for l in (languages or []) if l not in owner]
        if unknown:
            raise ValueError(f"no retrieval service for language(s) {unknown}; the services hold {sorted(owner)}")
        self.owner = {lang: url for lang, url in owner.items() if not languages or lang in languages}
        urls = list(dict.fromkeys(self.owner.values()))
        self.services = {url: ServiceClient(url, timeout, connect_timeout=connect_timeout) for url in urls}
        # Threads that live as long as this retriever: each keeps its connections open.
        self._pool = ThreadPoolExecutor(max_workers=WORKERS_PER_SERVICE * max(1, len(urls)),
                                        thread_name_prefix="crosearch-spread")
        self._down: dict[str, str] = {}  # url -> why, while it fails (logged when that changes)
        self._lock = threading.Lock()
        self.manifests = self._check_services()
        self.max_k = min((m.get("limits") or {}).get("max_k", 50) for m in self.manifests.values())

    def __repr__(self) -> str:
        return f"SpreadRetriever({', '.join(f'{u}: {l}' for u, l in self._by_service(self.languages).items())})"

    @property
    def languages(self) -> list[str]:
        return sorted(self.owner)

    @property
    def collection_name(self) -> str | None:
        return next((m.get("collection") for m in self.manifests.values()), None)

    # -- searching
    def search(self, query: str, languages=None, k: int = 5, query_lang: str | None = None) -> EvidenceList:
        """Aligned, rank-fused evidence for one query over `languages` (default: all)."""
        return self.search_many([query], languages, k, query_lang)[0]

    def concat(self, query: str, languages=None, k: int = 5) -> EvidenceList:
        """The concat baseline: top k of every index, merged by raw cosine."""
        return self.search_many([query], languages, k, mode="concat")[0]

    def search_many(self, queries: list[str], languages=None, k: int = 5, query_lang: str | None = None,
                    mode: str = "aligned") -> list[EvidenceList]:
        """`search` (or `concat`) for a batch of queries: one request per service, all at once."""
        if mode not in ("aligned", "concat"):
            raise ValueError(f"unknown mode {mode!r}; use 'aligned' or 'concat'")
        languages = self._check(languages)
        if not 1 <= k <= self.max_k:  # said here: the services would speak of their `depth`
            raise ValueError(f"k must be between 1 and {self.max_k} (the retrieval services' limit), got {k}")
        concat = mode == "concat"
        # The depths the in-process retriever searches: k for concat, at least `depth` to fuse.
        found, missing = self._gather(list(queries), languages, k if concat else max(k, self.depth), not concat)
        out = []
        for q in range(len(queries)):
            row = [found[lang][q] for lang in languages if lang in found]  # in the order asked, as in-process
            items = pool(row, k) if concat else fuse(row, k, query_lang, rrf_k=self.rrf_k,
                                                     align_threshold=self.align_threshold, score_weight=self.score_weight)
            out.append(EvidenceList(items, missing))
        return out

    def doc_ids(self, lang: str) -> set[str]:
        """The source keys (`Passage.doc_id`) one language's index holds (asked of its service)."""
        self._check([lang])
        return self.services[self.owner[lang]].doc_ids(lang)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- plumbing
    def _check(self, languages) -> list[str]:
        languages = list(dict.fromkeys(languages or self.languages))
        unknown = [l for l in languages if l not in self.owner]
        if unknown:
            raise ValueError(f"no index for language(s) {unknown}; these retrieval services hold {self.languages}")
        return languages

    def _by_service(self, languages: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for lang in languages:
            out.setdefault(self.owner[lang], []).append(lang)
        return out

    def _gather(self, queries: list[str], languages: list[str], depth: int,
                vectors: bool) -> tuple[dict[str, list[LanguageHits]], dict[str, str]]:
        """{language: its hits per query} from every service concerned, asked at once, and
        {language: why it is missing} for the services that failed. A refused request (a
        ValueError: bad k, a language the service lacks) is the caller's or the set-up's
        error, not an outage: it is raised."""
        asked = self._by_service(languages)
        futures = {url: self._pool.submit(self._ask, url, queries, langs, depth, vectors) for url, langs in asked.items()}
        found: dict[str, list[LanguageHits]] = {}
        missing: dict[str, str] = {}
        for url, future in futures.items():
            try:
                per_query = future.result()
            except RetrievalServiceError as err:
                self._note(url, err)
                missing.update({lang: f"service {err.reason}" for lang in asked[url]})
                continue
            self._note(url, None)
            for row in per_query:
                for hits in row:
                    found.setdefault(hits.lang, []).append(hits)
        return found, missing

    def _ask(self, url: str, queries: list[str], langs: list[str], depth: int, vectors: bool) -> list[list[LanguageHits]]:
        per_query = self.services[url].hits(queries, langs, depth, vectors)
        if len(per_query) != len(queries) or any([h.lang for h in row] != langs for row in per_query):
            raise RetrievalServiceError(f"the retrieval service at {url} answered for other queries or languages "
                                        "than it was asked", "failed")
        return per_query

    def _note(self, url: str, err: RetrievalServiceError | None) -> None:
        """Log a service going down or coming back (once each, not on every search)."""
        with self._lock:
            was = self._down.pop(url, None)
            if err is not None:
                self._down[url] = err.reason
        langs = ", ".join(l for l, u in self.owner.items() if u == url)
        if err is not None and was is None:
            self.log(f"[crosearch] {err}; its languages ({langs}) are skipped until it answers")
        elif err is None and was is not None:
            self.log(f"[crosearch] the retrieval service at {url} answers again ({langs})")

    def _check_services(self) -> dict[str, dict]:
        """Every service's manifest, asked at once: each must hold the languages the map gives
        it, and all the same collection built with the same embedder (else their hits would
        not be comparable). Services that do not answer are logged and skipped for now."""
        futures = {url: self._pool.submit(service.health) for url, service in self.services.items()}
        manifests, down = {}, {}
        for url, future in futures.items():
            try:
                manifests[url] = future.result()
            except RetrievalServiceError as err:
                down[url] = err
        if not manifests:
            raise RetrievalServiceError("none of the retrieval services answered: "
                                        + "; ".join(str(e) for e in down.values()), "unreachable")
        for url, manifest in manifests.items():
            lacking = [l for l, u in self.owner.items() if u == url and l not in manifest.get("languages", {})]
            if lacking:
                raise ValueError(f"the retrieval service at {url} has no index for {', '.join(lacking)} "
                                 f"(it holds {', '.join(sorted(manifest.get('languages', {})))}); "
                                 "correct --retriever-urls or the service's --languages")
        kinds = {(m.get("collection"), (m.get("embedder") or {}).get("id")) for m in manifests.values()}
        if len(kinds) > 1:
            raise ValueError("the retrieval services serve different collections or embedders: "
                             + "; ".join(f"{u}: {m.get('collection')} ({(m.get('embedder') or {}).get('id')})"
                                         for u, m in manifests.items()))
        for url, err in down.items():
            self._note(url, err)
        return manifests
