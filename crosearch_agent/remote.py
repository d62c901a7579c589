"""A client for the shared retrieval service, with the same interface as `Retriever`.

Many processes (rollout workers, the app, evaluations) can share one loaded collection
and embedder through `python -m crosearch_agent.serve_retrieval`; each of them then uses a
`RemoteRetriever` where it would have used a `Retriever` (`--retriever-url`). Results come
back as the same `Evidence` / `Hit` / `Passage` objects, so the agent cannot tell the two
apart. This module also defines the wire format both sides use (`evidence_to_json`,
`evidence_from_json`; `hits_to_json`, `hits_from_json` for one language's raw hits and their
vectors, which `spread.SpreadRetriever` fuses itself): every field of every object, so a round
trip is lossless. `ServiceClient` is the plain HTTP side, shared by both clients.
"""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import asdict

import numpy as np

from crosearch_agent.evidence import Evidence, Hit
from crosearch_agent.fusion import LanguageHits
from crosearch_agent.store import Passage, StoreError

DEFAULT_TIMEOUT_S = 60.0


class RetrievalServiceError(StoreError):
    """The retrieval service is unreachable, timed out, or failed.

    A `StoreError` because, to a caller, it means the same thing: no index to search
    (the command-line tools already turn those into one clear line). `reason` says it in a
    few words ("unreachable", "timed out", "failed"), for a note beside partial results.
    """

    def __init__(self, message: str, reason: str = "failed"):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------- wire format

def hit_to_json(h: Hit) -> dict:
    return {"passage": asdict(h.passage), "score": h.score, "rank": h.rank, "z": h.z}


def hit_from_json(h: dict) -> Hit:
    return Hit(Passage(**h["passage"]), float(h["score"]), int(h["rank"]), float(h["z"]))


def evidence_to_json(items: list[Evidence]) -> list[dict]:
    return [{"rank": e.rank, "score": e.score, "members": [hit_to_json(h) for h in e.members]} for e in items]


def evidence_from_json(data: list[dict]) -> list[Evidence]:
    return [Evidence(int(e["rank"]), float(e["score"]), [hit_from_json(h) for h in e["members"]]) for e in data]


def hits_to_json(found: list[LanguageHits]) -> list[dict]:
    # Vectors as base64 of their float32 bytes: exact (alignment must see the very numbers the
    # in-process retriever sees) and a third of the size of JSON numbers.
    return [{"lang": f.lang, "hits": [hit_to_json(h) for h in f.hits],
             "vectors": None if f.vectors is None else base64.b64encode(np.ascontiguousarray(f.vectors, dtype="<f4").tobytes()).decode(),
             "dim": None if f.vectors is None else int(f.vectors.shape[1])}
            for f in found]


def hits_from_json(data: list[dict]) -> list[LanguageHits]:
    out = []
    for f in data:
        vectors = None
        if f.get("vectors") is not None:
            flat = np.frombuffer(base64.b64decode(f["vectors"]), dtype="<f4")
            vectors = flat.reshape(-1, int(f["dim"])).astype(np.float32)
            if len(vectors) != len(f["hits"]):
                raise ValueError(f"{f['lang']}: {len(vectors)} vectors for {len(f['hits'])} hits")
        out.append(LanguageHits(f["lang"], [hit_from_json(h) for h in f["hits"]], vectors))
    return out


# ---------------------------------------------------------------- the clients

class ServiceClient:
    """HTTP to one retrieval service: JSON in and out, every failure one clear error."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S, client=None, connect_timeout: float | None = None):
        """`client`: an httpx.Client to send every request through (tests pass FastAPI's
        TestClient); by default each thread opens its own connection pool to `url`.
        `connect_timeout`: how long to wait for a connection (default: `timeout`)."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._shared = client
        self._local = threading.local()

    def health(self) -> dict:
        """The service's manifest: collection, embedder, languages and passage counts, limits."""
        return self._request("GET", "/health")

    def doc_ids(self, lang: str) -> set[str]:
        """The source keys (`Passage.doc_id`) held by one language's index."""
        return set(self._request("GET", f"/doc_ids/{lang}")["doc_ids"])

    def hits(self, queries: list[str], languages: list[str], depth: int, vectors: bool = True) -> list[list[LanguageHits]]:
        """Per query, each of `languages`' top `depth` hits (and their stored vectors), unfused."""
        body = {"queries": list(queries), "languages": list(languages), "depth": depth, "vectors": vectors}
        data = self._request("POST", "/hits", body)
        try:
            return [hits_from_json(r) for r in data["results"]]
        except (KeyError, TypeError, ValueError) as err:  # not what a retrieval service sends
            raise RetrievalServiceError(f"the retrieval service at {self.url} sent unreadable hits "
                                        f"({type(err).__name__}: {err})", "failed") from err

    def _client(self):
        import httpx

        if self._shared is not None:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout)
            client = self._local.client = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)
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
            waited = self.connect_timeout if isinstance(err, httpx.ConnectTimeout) else self.timeout
            raise RetrievalServiceError(f"the retrieval service at {self.url} did not answer within {waited:g} s "
                                        f"({type(err).__name__})", "timed out") from err
        except httpx.TransportError as err:
            raise RetrievalServiceError(
                f"the retrieval service at {self.url} is unreachable ({type(err).__name__}: {err}); start it with: "
                f"python -m crosearch_agent.serve_retrieval --collection NAME --port PORT", "unreachable") from err
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
                                        f"{message or response.text[:200]}", f"failed (HTTP {response.status_code})")
        return data


class RemoteRetriever(ServiceClient):
    """`Retriever`'s search interface, answered by a running retrieval service."""

    def __init__(self, url: str, languages: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S, client=None):
        """`client`: an httpx.Client to send every request through (tests pass FastAPI's
        TestClient); by default each thread opens its own connection pool to `url`."""
        super().__init__(url, timeout, client)
        self.manifest = self.health()
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

    # -- plumbing
    def _langs(self, languages) -> list[str]:
        return list(languages) if languages else self.languages

    def _search(self, body: dict) -> list[Evidence]:
        return evidence_from_json(self._request("POST", "/search", body)["evidence"])
