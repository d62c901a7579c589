"""`python -m crosearch_agent.serve_retrieval --collection NAME --port P`: the retriever over HTTP.

One process loads the collection's indexes and the embedder once; any number of agents,
rollout workers or evaluations then search it through `RemoteRetriever` (`--retriever-url`).
With `--languages` it holds only some of the collection's languages: several such services
(on several machines) serve one collection through `SpreadRetriever` (`--retriever-urls`),
which fetches each service's raw hits (`/hits`) and fuses them itself.

  POST /search        {query, languages?, k?, query_lang?, mode?: "aligned" | "concat"} -> {evidence}
  POST /search_batch  {queries: [...], languages?, k?, query_lang?, mode?} -> {results: [evidence, ...]}
  POST /hits          {queries: [...], languages?, depth?, vectors?: true} -> {results: [[language hits, ...], ...]}
                      each language's top `depth` hits and their stored vectors, unfused
  GET  /health        the loaded manifest: collection, embedder, dimension, languages and passage counts
  GET  /doc_ids/{lang} the source keys one language's index holds (the evaluation's local/cross split)

Every bad request gets a 4xx JSON answer {"error": "<one clear line>"}; input is never
echoed raw (it may not even be encodable). There is no authentication: the service binds
127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from crosearch_agent.config import Settings
from crosearch_agent.evidence import MAX_K

MAX_QUERY_CHARS = 2000     # the agent's own question limit
MAX_BATCH = 64
MAX_LANGUAGES = 64         # more entries than any collection has languages is a malformed request
MAX_BODY_BYTES = 4 << 20   # the largest valid batch is ~1.5 MB (64 x 2,000 characters, each a 12-byte JSON escape)
SETTINGS_FLAGS = ["collection", "languages", "embedder", "k", "align_threshold", "rrf_k", "score_weight"]


# Strict types: "3" is not a k, 1 is not a query (no silent coercion of a malformed request).
class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    languages: list[StrictStr] | None = Field(None, max_length=MAX_LANGUAGES)
    k: StrictInt | None = None
    query_lang: StrictStr | None = None
    mode: Literal["aligned", "concat"] = "aligned"


class SearchRequest(Options):
    query: StrictStr


class BatchRequest(Options):
    queries: list[StrictStr] = Field(min_length=1, max_length=MAX_BATCH)


class HitsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[StrictStr] = Field(min_length=1, max_length=MAX_BATCH)
    languages: list[StrictStr] | None = Field(None, max_length=MAX_LANGUAGES)
    depth: StrictInt | None = None
    vectors: StrictBool = True


class BadRequest(ValueError):
    """A request the service refuses, with the one line the caller sees."""


def _show(value, limit: int = 60) -> str:
    """A request value safe to put in an error message (ASCII, short)."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def check_query(query: str, what: str = "query") -> str:
    if not query.strip():
        raise BadRequest(f"{what} is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"{what} is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        # JSON allows "\ud800" escapes, which are not text: the tokenizer would choke on them.
        raise BadRequest(f"{what} contains invalid Unicode (an unpaired surrogate)") from None
    return query


def check_options(languages, k, query_lang, served: list[str], default_k: int,
                  k_name: str = "k") -> tuple[list[str], int]:
    languages = list(served) if languages is None else list(languages)
    if not languages:
        raise BadRequest(f"languages is empty; leave it out to search every language ({', '.join(served)})")
    unknown = [l for l in languages if l not in served]
    if unknown:
        raise BadRequest(f"no index for language(s) {', '.join(_show(l) for l in unknown[:5])}; "
                         f"this service has {', '.join(served)}")
    if query_lang is not None and query_lang not in served:
        raise BadRequest(f"query_lang {_show(query_lang)} is not one of this service's languages ({', '.join(served)})")
    k = default_k if k is None else k
    if not 1 <= k <= MAX_K:
        raise BadRequest(f"{k_name} must be between 1 and {MAX_K}, got {k}")
    return languages, k


def create_app(retriever, collection: str | None = None, default_k: int = 5):
    """The FastAPI app serving `retriever` (a loaded `Retriever`)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from crosearch_agent.remote import evidence_to_json, hits_to_json

    served = list(retriever.languages)
    manifest = retriever.collection.manifest
    health = {
        "status": "ok",
        "collection": collection or manifest.get("collection"),
        "embedder": manifest["embedder"],
        "index_type": manifest.get("index_type"),
        "languages": {lang: len(retriever.collection.passages[lang]) for lang in served},
        "passages": sum(len(retriever.collection.passages[lang]) for lang in served),
        "created": manifest.get("created"),
        "limits": {"max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K, "max_batch": MAX_BATCH, "default_k": default_k},
    }
    doc_ids = {lang: sorted({p.doc_id for p in retriever.collection.passages[lang]}) for lang in served}

    app = FastAPI(title="CroSearch retrieval service", version="1", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        # Refused before the body is read; a body sent without a length is read and parsed as usual.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"request body of {int(length):,} bytes is over the limit of {MAX_BODY_BYTES:,}"},
                                status_code=413)
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, err: BadRequest):
        return JSONResponse({"error": str(err)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        # pydantic's messages are clear; its `input` and field names may be anything, so only
        # the location (made safe) and the message go back.
        problems = []
        for e in err.errors():
            if e.get("type") == "json_invalid":
                problems.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'decode error')})")
                continue
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            if not loc and e.get("type") in ("model_attributes_type", "dict_type", "missing"):
                problems.append("the body must be a JSON object, e.g. {\"query\": \"...\"} (Content-Type: application/json)")
                continue
            problems.append(f"{_show(loc or 'body', 40).strip(chr(39))}: {e.get('msg', 'invalid')}")
        return JSONResponse({"error": "invalid request: " + "; ".join(problems[:5])}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception):  # a bug, not the caller's fault: still one JSON line
        return JSONResponse({"error": f"internal error: {type(err).__name__}"}, status_code=500)

    def run(queries: list[str], req: Options) -> tuple[list[list], float]:
        languages, k = check_options(req.languages, req.k, req.query_lang, served, default_k)
        t = time.perf_counter()
        # Runs in FastAPI's threadpool (plain `def` routes). The embedder serialises its own
        # calls with a lock; FAISS CPU indexes allow concurrent searches, and the retriever
        # keeps no state between calls, so no further lock is needed.
        qvecs = retriever.embedder.encode_queries(queries, progress=False)
        if req.mode == "concat":
            results = retriever.concat_vectors(qvecs, languages, k)
        else:
            results = retriever.search_vectors(qvecs, languages, k, req.query_lang)
        return [evidence_to_json(r) for r in results], (time.perf_counter() - t) * 1000

    @app.post("/search")
    def search(req: SearchRequest):
        query = check_query(req.query)
        results, took = run([query], req)
        return {"evidence": results[0], "took_ms": round(took, 2)}

    @app.post("/search_batch")
    def search_batch(req: BatchRequest):
        queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(req.queries)]
        results, took = run(queries, req)
        return {"results": results, "took_ms": round(took, 2)}

    @app.post("/hits")
    def hits(req: HitsRequest):
        queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(req.queries)]
        languages, depth = check_options(req.languages, req.depth, None, served, max(default_k, retriever.depth), "depth")
        t = time.perf_counter()
        qvecs = retriever.embedder.encode_queries(queries, progress=False)
        found = retriever.language_hits(qvecs, languages, depth, req.vectors)
        # Straight to JSON: FastAPI's encoder would walk every hit of every language again.
        return JSONResponse({"results": [hits_to_json(f) for f in found],
                             "took_ms": round((time.perf_counter() - t) * 1000, 2)})

    @app.get("/health")
    def get_health():
        return health

    @app.get("/doc_ids/{lang}")
    def get_doc_ids(lang: str):
        if lang not in doc_ids:
            raise HTTPException(404, f"no index for language {_show(lang)}; this service has {', '.join(served)}")
        return {"lang": lang, "doc_ids": doc_ids[lang]}

    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crosearch_agent.serve_retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; the service has no authentication)")
    parser.add_argument("--port", type=int, default=8100, help="port to listen on (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and FAISS threads per request (default: %(default)s: concurrency comes from requests; "
                             "on a shared machine more threads per call were measured 5-20x slower)")
    Settings.add_arguments(parser, only=SETTINGS_FLAGS)
    args = parser.parse_args(argv)
    settings = Settings.from_args(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: anyone who can reach this port can search the collection", file=sys.stderr)

    import faiss
    import torch
    import uvicorn

    from crosearch_agent.retriever import load_retriever
    from crosearch_agent.store import StoreError

    # Concurrency comes from requests; OpenMP teams per request would fight over the cores.
    torch.set_num_threads(max(1, args.threads))
    faiss.omp_set_num_threads(max(1, args.threads))
    try:
        retriever = load_retriever(dataclasses.replace(settings, retriever_url=None))
    except (StoreError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    app = create_app(retriever, settings.collection, settings.k)
    print(f"loaded '{settings.collection}' ({', '.join(retriever.languages)}); POST /search, GET /health", flush=True)
    # uvicorn says "running on http://HOST:PORT" once bound (or why it could not bind); no line per request.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
