"""A client for the shared retrieval service, with the same interface as `Retriever`.

Many processes (rollout workers, the app, evaluations) can share one loaded collection
and embedder through `python -m crosearch_agent.serve_retrieval`; each of them then uses a
`RemoteRetriever` where it would have used a `Retriever` (`--retriever-url`). Results come
back as the same `Evidence` / `Hit` / `Passage` objects, so the agent cannot tell the two
apart. This module also defines the wire format both sides use (`evidence_to_json`,
`evidence_from_json`): every field of every object, so a round trip is lossless.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict

from crosearch_agent.evidence import Evidence, Hit
from crosearch_agent.store import Passage, StoreError

DEFAULT_TIMEOUT_S = 60.0


class RetrievalServiceError(StoreError):
    """The retrieval service is unreachable, timed out, or failed.

    A `StoreError` because, to a caller, it means the same thing: no index to search
    (the command-line tools already turn those into one clear line).
    """


# ---------------------------------------------------------------- wire format

def evidence_to_json(items: list[Evidence]) -> list[dict]:
    return [{"rank": e.rank, "score": e.score,
             "members": [{"passage": asdict(h.passage), "score": h.score, "rank": h.rank, "z": h.z} for h in e.members]}
            for e in items]


def evidence_from_json(data: list[dict]) -> list[Evidence]:
    return [Evidence(int(e["rank"]), float(e["score"]),
                     [Hit(Passage(**h["passage"]), float(h["score"]), int(h["rank"]), float(h["z"])) for h in e["members"]])
            for e in data]


# ---------------------------------------------------------------- the client

class RemoteRetriever:
    """`Retriever`'s search interface, answered by a running retrieval service."""

    def __init__(self, url: str, languages: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S, client=None):
        """`client`: an httpx.Client to send every request through (tests pass FastAPI's
        TestClient); by default each thread opens its own connection pool to `url`."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._shared = client
        self._local = threading.local()
        self.manifest = self._request("GET", "/health")
        served = sorted(self.manifest["languages"])
        unknown = [l for l in (languages or []) if l not in served]
        if unknown:
            raise ValueError(f"the retrieval service at {self.url} has no index for language(s) {unknown}; it serves {served}")
        self._languages = [l for l in served if not languages or l in languages]

    def __repr__(self) -> str:
        return f"RemoteRetriever({self.url!r}, collection={self.manifest.get('collection')!r})"

    @property
    def languages(self) -> list[str]:
        return list(self._languages)

    @property
    def collection_name(self) -> str | None:
        return self.manifest.get("collection")

    def search(self, query: str, languages=None, k: int = 5, query_lang: str | None = None) -> list[Evidence]:
        """Aligned, rank-fused evidence for one query over `languages` (default: all)."""
        return self._search({"query": query, "languages": self._langs(languages), "k": k, "query_lang": query_lang,
                             "mode": "aligned"})

    def concat(self, query: str, languages=None, k: int = 5) -> list[Evidence]:
        """The concat baseline: top k of every index, merged by raw cosine."""
        return self._search({"query": query, "languages": self._langs(languages), "k": k, "mode": "concat"})

    def search_many(self, queries: list[str], languages=None, k: int = 5, query_lang: str | None = None,
                    mode: str = "aligned") -> list[list[Evidence]]:
        """`search` (or `concat`) for a batch of queries in one request (one embedder call)."""
        body = {"queries": list(queries), "languages": self._langs(languages), "k": k, "query_lang": query_lang, "mode": mode}
        data = self._request("POST", "/search_batch", body)
        return [evidence_from_json(r) for r in data["results"]]

    def doc_ids(self, lang: str) -> set[str]:
        """The source keys (`Passage.doc_id`) held by one language's index."""
        return set(self._request("GET", f"/doc_ids/{lang}")["doc_ids"])

    # -- plumbing
    def _langs(self, languages) -> list[str]:
        return list(languages) if languages else self.languages

    def _search(self, body: dict) -> list[Evidence]:
        return evidence_from_json(self._request("POST", "/search", body)["evidence"])

    def _client(self):
        import httpx

        if self._shared is not None:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.url, timeout=self.timeout, trust_env=False)
        return client

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        try:
            # ASCII-escaped JSON: a lone surrogate in a query travels (and is refused by the
            # service with a clear message) instead of failing to encode here.
            content = json.dumps(body).encode() if body is not None else None
            response = self._client().request(method, path, content=content,
                                              headers={"Content-Type": "application/json"} if content else None)
        except httpx.TimeoutException as err:
            raise RetrievalServiceError(f"the retrieval service at {self.url} did not answer within {self.timeout:g} s "
                                        f"({type(err).__name__})") from err
        except httpx.TransportError as err:
            raise RetrievalServiceError(
                f"the retrieval service at {self.url} is unreachable ({type(err).__name__}: {err}); start it with: "
                f"python -m crosearch_agent.serve_retrieval --collection NAME --port PORT") from err
        try:
            data = response.json()
        except ValueError:
            data = None
        message = data.get("error") if isinstance(data, dict) else None
        if 400 <= response.status_code < 500:
            # The request was wrong (unknown language, bad k): the same error a local Retriever raises.
            raise ValueError(message or f"the retrieval service at {self.url} refused the request (HTTP {response.status_code})")
        if response.status_code != 200 or not isinstance(data, dict):
            raise RetrievalServiceError(f"the retrieval service at {self.url} failed (HTTP {response.status_code}): "
                                        f"{message or response.text[:200]}")
        return data
