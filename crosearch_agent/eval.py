"""`python -m crosearch_agent.eval`: the evaluation protocol of EVAL.md.

`--task retrieval` asks, for every question of a split, whether the gold paragraph (in
any language) is among the top k evidence items shown, for three methods:
`mono` (own language's index), `concat` (top k of every index merged by raw score) and
`aligned` (the agent's retriever: every index, aligned across languages, rank-fused).
Results go to one JSON (numbers + exact configuration), a Markdown table and a PNG chart.
Any index the run needs and lacks is built first (by `python -m indexes.build`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from crosearch_agent import qa_data
from crosearch_agent.config import REPO_ROOT, Settings, data_home
from crosearch_agent.store import StoreError, collection_dir, load_collection

RETRIEVAL_METHODS = ("mono", "concat", "aligned")
KS = (1, 5, 10)


def ensure_index(settings: Settings) -> None:
    """Build the collection's index when it is missing or stale (progress shows in the terminal)."""
    try:
        manifest = load_collection(collection_dir(settings.collection), verify=False).manifest
        if manifest["embedder"]["id"] == settings.embedder:
            return
    except StoreError:
        pass
    cmd = [sys.executable, "-m", "indexes.build", "--collection", settings.collection, "--embedder", settings.embedder,
           "--index-type", settings.index_type]
    if settings.data_dir:
        cmd += ["--data-dir", settings.data_dir]
    print("index missing; building it:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------- retrieval metrics

def gold_rank(evidence, gold_doc: str) -> int | None:
    """1-based rank of the first evidence item holding the gold paragraph in any language."""
    for item in evidence:
        if gold_doc in item.doc_ids:
            return item.rank
    return None


def retrieval_scores(ranks: list[int | None]) -> dict:
    n = len(ranks)
    out = {"n": n}
    for k in KS:
        out[f"recall@{k}"] = sum(1 for r in ranks if r is not None and r <= k) / n if n else 0.0
    out["mrr"] = sum(1.0 / r for r in ranks if r is not None and r <= max(KS)) / n if n else 0.0
    return out


def summarise(rows: list[dict], score_fn) -> dict:
    """EVAL.md's shape: overall, local/cross subsets, per language."""
    out = {"overall": score_fn(rows), "subsets": {}, "by_language": {}}
    for subset in ("local", "cross"):
        chosen = [r for r in rows if r["subset"] == subset]
        if chosen:
            out["subsets"][subset] = score_fn(chosen)
    for lang in sorted({r["lang"] for r in rows}):
        out["by_language"][lang] = score_fn([r for r in rows if r["lang"] == lang])
    return out


def run_retrieval(settings: Settings, split: str, methods, limit: int | None, k: int = max(KS)) -> tuple[dict, list]:
    from crosearch_agent.retriever import load_retriever

    ensure_index(settings)
    retriever = load_retriever(settings)
    langs = [l for l in (settings.languages or retriever.languages) if l in retriever.languages]
    questions = []
    for lang in langs:
        qs = qa_data.xquad_questions([lang], split, settings.data_dir)
        questions += qs[:limit] if limit else qs
    print(f"{len(questions)} questions ({split}) in {len(langs)} languages; encoding...", flush=True)
    local_docs = {lang: {p.doc_id for p in retriever.collection.passages[lang]} for lang in retriever.languages}
    t0 = time.perf_counter()
    qvecs = retriever.embedder.encode_queries([q.question for q in questions], progress=True)
    encode_s = time.perf_counter() - t0

    rows, timings = [], {}
    for method in methods:
        t0 = time.perf_counter()
        results: list = [None] * len(questions)
        for lang in langs:  # batch by query language: one FAISS call per index
            idx = [i for i, q in enumerate(questions) if q.lang == lang]
            if method == "mono":
                got = retriever.search_vectors(qvecs[idx], [lang], k, query_lang=lang)
            elif method == "concat":
                got = retriever.concat_vectors(qvecs[idx], langs, k)
            elif method == "aligned":
                got = retriever.search_vectors(qvecs[idx], [lang] + [l for l in langs if l != lang], k, query_lang=lang)
            else:
                raise ValueError(f"unknown retrieval method {method!r}; choose from {RETRIEVAL_METHODS}")
            for i, ev in zip(idx, got):
                results[i] = ev
        timings[method] = (time.perf_counter() - t0) / max(len(questions), 1)
        for q, ev in zip(questions, results):
            rows.append({"method": method, "id": q.id, "lang": q.lang, "rank": gold_rank(ev, q.doc_id),
                         "subset": "local" if q.doc_id in local_docs.get(q.lang, ()) else "cross",
                         "languages_shown": sorted({l for e in ev for l in e.languages})})
    results = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        results[method] = summarise(mine, lambda rs: retrieval_scores([r["rank"] for r in rs]))
        results[method]["overall"]["search_ms"] = round(1000 * timings[method], 3)
    results["_timing"] = {"query_encode_ms": round(1000 * encode_s / max(len(questions), 1), 2)}
    return results, rows


# ---------------------------------------------------------------- reports

def markdown_table(results: dict, keys) -> str:
    methods = [m for m in results if not m.startswith("_")]
    lines = ["| method | subset | n | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for m in methods:
        parts = [("all", results[m]["overall"])] + list(results[m]["subsets"].items())
        for subset, s in parts:
            lines.append(f"| {m} | {subset} | {s['n']} | " + " | ".join(f"{s[k]:.3f}" for k in keys) + " |")
    langs = sorted({l for m in methods for l in results[m]["by_language"]})
    lines += ["", f"Per query language ({keys[min(1, len(keys) - 1)]}):", "",
              "| method | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    key = keys[min(1, len(keys) - 1)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{results[m]['by_language'][l][key]:.2f}" for l in langs) + " |")
    return "\n".join(lines) + "\n"


def chart(results: dict, key: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in results if not m.startswith("_")]
    langs = sorted({l for m in methods for l in results[m]["by_language"]})
    groups = langs + ["local", "cross", "all"]
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(groups) * len(methods) / 2), 4.5))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [results[m]["by_language"].get(g, {}).get(key, np.nan) for g in langs]
        vals += [results[m]["subsets"].get(s, {}).get(key, np.nan) for s in ("local", "cross")]
        vals.append(results[m]["overall"][key])
        ax.bar(np.arange(len(groups)) + i * width, vals, width, label=m)
    ax.set_xticks(np.arange(len(groups)) + width * (len(methods) - 1) / 2)
    ax.set_xticklabels(groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel(key)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crosearch_agent.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["retrieval"], default="retrieval", help="what to evaluate")
    parser.add_argument("--split", choices=["train", "dev", "test"], default="test", help="XQuAD article-level split (EVAL.md)")
    parser.add_argument("--methods", default=None, help=f"comma-separated methods (retrieval: {','.join(RETRIEVAL_METHODS)})")
    parser.add_argument("--limit", type=int, default=None, help="at most this many questions per language")
    parser.add_argument("--out", default=None, help="output folder (default: <data home>/eval/<task>-<collection>-<split>)")
    Settings.add_arguments(parser, only=["collection", "languages", "embedder", "index_type", "align_threshold",
                                         "rrf_k", "score_weight", "data_dir", "seed"])
    args = parser.parse_args(argv)
    settings = Settings.from_args(args)
    methods = args.methods.split(",") if args.methods else list(RETRIEVAL_METHODS)
    out = Path(args.out or data_home() / "eval" / f"{args.task}-{settings.collection}-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        results, rows = run_retrieval(settings, args.split, methods, args.limit)
    except (StoreError, qa_data.DataNotFound, ValueError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    keys = [f"recall@{k}" for k in KS] + ["mrr"]
    config = {"task": args.task, "split": args.split, "methods": methods, "limit": args.limit,
              "git_commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), **vars(settings)}
    (out / "results.json").write_text(json.dumps({"config": config, "results": results}, indent=2, ensure_ascii=False))
    with open(out / "rows.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    table = markdown_table(results, keys)
    (out / "results.md").write_text(f"# {args.task}: {settings.collection}, {args.split}\n\n{table}")
    chart(results, "recall@5", out / "recall_at_5.png", f"recall@5, {settings.collection} ({args.split})")
    print(table)
    print(f"wrote {out}/results.json, results.md, recall_at_5.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
