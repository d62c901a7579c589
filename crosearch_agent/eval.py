"""`python -m crosearch_agent.eval`: the evaluation protocol of EVAL.md.

`--task qa` runs the policy on every question of a split with each method
(`closed_book`, `mono_rag`, `concat_rag`, `oracle`, `crosearch`) and scores the answers (EM, F1, fEM,
c3R, EM-any, answer language, format validity, searches, latency, and whether the gold
paragraph was among the evidence shown). Questions go through the backend in batches, turn by turn.

`--task retrieval` asks, for every question of a split, whether the gold paragraph (in
any language) is among the top k evidence items shown, as the version an item shows (an
aligned item shows one of its passages; `hidden`: the gold was in the top 10 only behind
another passage), for three methods:
`mono` (own language's index), `concat` (top k of every index merged by raw score) and
`aligned` (the agent's retriever: every index, aligned across languages, rank-fused).
Results go to one JSON (numbers + exact configuration), a Markdown table and a PNG chart.
Any index the run needs and lacks is built first (by `python -m indexes.build`).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from crosearch_agent import qa_data
from crosearch_agent.config import REPO_ROOT, Settings, data_home, portable, uses_services
from crosearch_agent.policy_folders import settings_from_command_line
from crosearch_agent.store import StoreError, collection_dir, load_collection

RETRIEVAL_METHODS = ("mono", "concat", "aligned")
KS = (1, 5, 10)


def ensure_index(settings: Settings) -> None:
    """Build the collection's index when it is missing or stale (progress shows in the terminal)."""
    if uses_services(settings):
        return  # retrieval services hold the indexes
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

def gold_rank(evidence, gold_doc: str, query_lang: str | None = None) -> int | None:
    """1-based rank of the first evidence item holding the gold paragraph in any language;
    with `query_lang`, only as the version the item shows (the one the policy reads)."""
    for item in evidence:
        if gold_doc in ({item.shown(query_lang).passage.doc_id} if query_lang else item.doc_ids):
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
    for lang in sorted({r["query_lang"] for r in rows}):
        out["by_language"][lang] = score_fn([r for r in rows if r["query_lang"] == lang])
    return out


def run_retrieval(settings: Settings, split: str, methods, limit: int | None, k: int = max(KS)) -> tuple[dict, list]:
    from crosearch_agent.retriever import load_retriever

    settings = dataclasses.replace(settings, retriever_url=None, retriever_urls=None)  # needs the embedder and raw vectors: local
    ensure_index(settings)
    retriever = load_retriever(dataclasses.replace(settings, languages=None))
    langs = [l for l in (settings.languages or retriever.languages) if l in retriever.languages]
    questions = []
    for lang in langs:
        questions += spread(qa_data.xquad_questions([lang], split, settings.data_dir), limit)
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
                got = retriever.concat_vectors(qvecs[idx], retriever.languages, k)
            elif method == "aligned":
                got = retriever.search_vectors(qvecs[idx], [lang] + [l for l in retriever.languages if l != lang], k, query_lang=lang)
            else:
                raise ValueError(f"unknown retrieval method {method!r}; choose from {RETRIEVAL_METHODS}")
            for i, ev in zip(idx, got):
                results[i] = ev
        timings[method] = (time.perf_counter() - t0) / max(len(questions), 1)
        for q, ev in zip(questions, results):
            rank = gold_rank(ev, q.doc_id, q.lang)
            rows.append({"method": method, "id": q.id, "query_lang": q.lang, "rank": rank,
                         "hidden": rank is None and gold_rank(ev, q.doc_id) is not None,
                         "subset": "local" if q.doc_id in local_docs.get(q.lang, ()) else "cross",
                         "languages_shown": sorted({l for e in ev for l in e.languages})})
    results = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        results[method] = summarise(mine, lambda rs: {**retrieval_scores([r["rank"] for r in rs]),
                                                      "hidden": sum(r["hidden"] for r in rs) / len(rs)})
        results[method]["overall"]["search_ms"] = round(1000 * timings[method], 3)
    results["_timing"] = {"query_encode_ms": round(1000 * encode_s / max(len(questions), 1), 2)}
    return results, rows


# ---------------------------------------------------------------- QA

QA_METHODS = ("closed_book", "mono_rag", "concat_rag", "oracle", "crosearch")
ORACLE_CROSS_LANG = {"en": "de"}  # cross questions get the English paragraph; English ones the German
QA_KEYS = ("em", "f1", "fem", "c3r", "em_any", "lang", "valid", "searches", "latency_s", "recall")
SUPPORT_KEYS = ("support_found", "support_gold_correct", "disagree")


def support_scores(rows: list[dict]) -> dict:
    """Support (issue "evidence a reader can check"): the share of answers with a supporting
    passage; among answers correct in any language (EM-any), the share whose support is the
    gold paragraph (no support counts as not); the share of "disagree" verdicts. None where
    the method has no evidence."""
    with_evidence = [r for r in rows if "support" in r]
    if not with_evidence:
        return {k: None for k in SUPPORT_KEYS}
    correct = [r for r in with_evidence if r.get("em_any")]
    return {"support_found": sum(r["support"] is not None for r in with_evidence) / len(with_evidence),
            "support_gold_correct": (sum(r["support_gold"] == 1.0 for r in correct) / len(correct)) if correct else None,
            "support_correct_n": len(correct),
            "disagree": sum(r["agreement"] == "disagree" for r in with_evidence) / len(with_evidence)}


def spread(questions: list, limit: int | None) -> list:
    """At most `limit` of one language's questions, spread over its split: the first question
    of every paragraph (paragraphs in a fixed pseudo-random order), then every second one, and
    so on. XQuAD's translations share paragraphs and question order, so every language gets
    the same questions. The first 30 test questions in file order were 2 paragraphs of one
    article; these are 30 paragraphs of 15 articles."""
    if not limit:
        return list(questions)
    seen: dict[str, int] = {}
    keyed = []
    for q in questions:
        nth = seen[q.doc_id] = seen.get(q.doc_id, -1) + 1
        keyed.append(((nth, hashlib.sha256(q.doc_id.encode()).hexdigest()), q))
    return [q for _, q in sorted(keyed, key=lambda pair: pair[0])[:limit]]


def qa_questions(dataset: str, split: str, langs, limit: int | None, data_dir=None) -> list:
    """The questions of a split, at most `limit` per language (`spread` over its paragraphs),
    in a stable order. `langs` None: every language the data set has."""
    if dataset == "xquad":
        langs = langs or qa_data.XQUAD_LANGS
        by_lang = {lang: qa_data.xquad_questions([lang], split, data_dir) for lang in langs}
    elif dataset == "tydiqa-goldp":
        questions = qa_data.load_tydiqa(split, langs, data_dir)[1]
        langs = langs or sorted({q.lang for q in questions})
        by_lang = {lang: [q for q in questions if q.lang == lang] for lang in langs}
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose xquad or tydiqa-goldp")
    return [q for lang in langs for q in spread(by_lang[lang], limit)]


def parallel_golds(questions, split: str, data_dir=None) -> dict[str, dict[str, list[str]]]:
    """XQuAD: every language's gold answers of each question id (for EM-any)."""
    ids = {q.id for q in questions}
    golds: dict[str, dict[str, list[str]]] = {}
    for q in qa_data.xquad_questions(qa_data.XQUAD_LANGS, split, data_dir):
        if q.id in ids:
            golds.setdefault(q.id, {})[q.lang] = list(q.answers)
    return golds


class OracleRetriever:
    """The reading diagnostic: whatever is searched, the question's gold paragraph is the only
    evidence. Local questions (their paragraph is in their language's index) get it in their
    language; cross-lingual ones in English (English questions: in German), so that losses in
    retrieval, in reading and in the protocol show apart."""

    def __init__(self, languages, evidence: dict):
        self.languages, self.evidence = list(languages), evidence  # (question, lang) -> [Evidence]

    def search(self, query: str, languages=None, k: int = 5, query_lang: str | None = None):
        return list(self.evidence.get((query.strip(), query_lang), []))


ORACLE_CHARS = 600  # about one indexed passage (~100 words), the size crosearch's evidence has


def oracle_evidence(questions, local_docs: dict, data_dir=None) -> dict:
    """(question, lang) -> [the gold paragraph as one Evidence item] for XQuAD questions: the
    passage-sized excerpt of the paragraph around that language's gold answer."""
    from crosearch_agent.prompts import excerpt
    from crosearch_agent.evidence import Evidence, Hit
    from crosearch_agent.store import Passage

    xquad: dict[str, tuple[dict, dict]] = {}
    out = {}
    for q in questions:
        lang = q.lang if q.doc_id in local_docs.get(q.lang, ()) else ORACLE_CROSS_LANG.get(q.lang, "en")
        if lang not in xquad:
            paragraphs, qs = qa_data.load_xquad(lang, data_dir)
            xquad[lang] = ({p.doc_id: p.context.lstrip("\ufeff") for p in paragraphs}, {x.id: x for x in qs})
        contexts, by_id = xquad[lang]
        answer = by_id[q.id].answers[0] if q.id in by_id and by_id[q.id].answers else ""
        passage = Passage(f"oracle/{lang}/{q.doc_id}", lang, q.title, excerpt(contexts[q.doc_id], answer, ORACLE_CHARS),
                          q.doc_id, source="xquad")
        out[(q.question.strip(), q.lang)] = [Evidence(1, 1.0, [Hit(passage, 1.0, 1)])]
    return out


def qa_row(method: str, q, result, local_docs: dict, golds_by_lang, latency_s: float, embedder=None) -> dict:
    from crosearch_agent.metrics import score_answer
    from crosearch_agent.support import explain

    # The gold counts as shown only when the policy read it (or its translation): a passage
    # aligned into an item that shows another passage was not in front of the policy.
    shown = {item.shown(q.lang).passage.doc_id for item in result.evidence}
    # "lang" is EVAL.md's answer-language metric, so the question's language is "query_lang".
    row = {"method": method, "id": q.id, "query_lang": q.lang, "question": q.question, "gold": list(q.answers),
           "answer": result.answer or "", "error": result.error,
           "forced": any(getattr(s, "forced", False) for s in result.steps),
           "subset": "local" if q.doc_id in local_docs.get(q.lang, ()) else "cross",
           **score_answer(result.answer or "", q.answers, q.lang, golds_by_lang),
           "valid": float(result.format_valid), "searches": len(result.searches), "latency_s": latency_s,
           "recall": (float(q.doc_id in shown) if method != "closed_book" else None),
           "languages_shown": sorted({l for item in result.evidence for l in item.languages})}
    if method != "closed_book":
        found, agreed = explain(result, embedder)
        row.update(support=found[0].how if found else None,
                   support_gold=float(found[0].doc_id == q.doc_id) if found else None,
                   support_lang=found[0].lang if found else None, agreement=agreed.status)
    return row


def _answer_all(policy, retriever, settings: Settings, methods, questions, local_docs, golds,
                batch_size: int) -> tuple[list, dict]:
    """Every question through every method, in batches: the rows and each method's wall time."""
    from tqdm import tqdm

    from crosearch_agent.agent import Agent

    rows, timing = [], {"policy": policy.name, "backend": policy.backend}
    embedder = getattr(retriever, "embedder", None)  # support's meaning match (None: a retrieval service)
    for method in methods:
        searcher = retriever
        if method == "oracle":
            searcher = OracleRetriever(retriever.languages, oracle_evidence(questions, local_docs, settings.data_dir))
        agent = Agent(policy, searcher, settings, method)  # closed_book still detects languages with it
        t0 = time.perf_counter()
        bar = tqdm(total=len(questions), desc=method, unit="q")
        for start in range(0, len(questions), batch_size):
            batch = questions[start:start + batch_size]
            tb = time.perf_counter()
            results = agent.run_batch([q.question for q in batch], [q.lang for q in batch])
            per_q = (time.perf_counter() - tb) / len(batch)  # amortised: the batch shares the backend
            rows += [qa_row(method, q, r, local_docs, golds.get(q.id), per_q, embedder) for q, r in zip(batch, results)]
            bar.update(len(batch))
        bar.close()
        timing[method] = {"wall_s": round(time.perf_counter() - t0, 2)}
    return rows, timing


def run_qa(settings: Settings, dataset: str, split: str, methods, limit: int | None,
           batch_size: int = 32) -> tuple[dict, list, dict]:
    from crosearch_agent.metrics import mean_scores
    from crosearch_agent.policy import load_policy
    from crosearch_agent.retriever import load_retriever

    unknown = [m for m in methods if m not in QA_METHODS]
    if unknown:
        raise ValueError(f"unknown QA method(s) {unknown}; choose from {', '.join(QA_METHODS)}")
    if "oracle" in methods and dataset != "xquad":
        raise ValueError("the oracle method needs XQuAD's parallel paragraphs; use --dataset xquad")
    # Questions first: a missing data set fails in seconds, before any index or model loads.
    questions = qa_questions(dataset, split, settings.languages, limit, settings.data_dir)
    ensure_index(settings)
    # --languages picks the questions; every index of the collection stays searchable.
    retriever = load_retriever(dataclasses.replace(settings, languages=None))
    langs = [l for l in (settings.languages or retriever.languages) if l in retriever.languages]
    questions = [q for q in questions if q.lang in langs]
    if not questions:
        raise ValueError(f"no {dataset} questions in the {split} split for {', '.join(langs)}")
    golds = parallel_golds(questions, split, settings.data_dir) if dataset == "xquad" else {}
    local_docs = {lang: retriever.doc_ids(lang) for lang in retriever.languages}
    policy = load_policy(settings.backend, settings.policy, settings.base_url)
    print(f"{len(questions)} {dataset} questions ({split}) in {len(langs)} languages; "
          f"policy {policy.name} on {policy.backend}", flush=True)

    try:
        rows, timing = _answer_all(policy, retriever, settings, methods, questions, local_docs, golds, batch_size)
    finally:  # an in-process engine (vLLM) holds GBs and worker processes: free them for the caller
        if hasattr(policy, "close"):
            policy.close()

    def scores(rs):
        means = mean_scores([{k: r[k] for k in QA_KEYS} for r in rs])
        means["errors"] = sum(1 for r in rs if r["error"])
        means["forced"] = sum(1 for r in rs if r["forced"]) / len(rs)
        means.update(support_scores(rs))
        return means

    results = {m: summarise([r for r in rows if r["method"] == m], scores) for m in methods}
    return results, rows, timing


# ---------------------------------------------------------------- reports

def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_table(results: dict, keys, key: str) -> str:
    """Overall and subset rows for every key, then one table of `key` per query language."""
    methods = [m for m in results if not m.startswith("_")]
    lines = ["| method | subset | n | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for m in methods:
        parts = [("all", results[m]["overall"])] + list(results[m]["subsets"].items())
        for subset, s in parts:
            lines.append(f"| {m} | {subset} | {s['n']} | " + " | ".join(_fmt(s.get(k)) for k in keys) + " |")
    langs = sorted({l for m in methods for l in results[m]["by_language"]})
    lines += ["", f"Per query language ({key}):", "",
              "| method | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_fmt(results[m]["by_language"][l].get(key)) for l in langs) + " |")
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
        vals = [results[m]["by_language"].get(g, {}).get(key) for g in langs]
        vals += [results[m]["subsets"].get(s, {}).get(key) for s in ("local", "cross")]
        vals.append(results[m]["overall"].get(key))
        vals = [np.nan if v is None else v for v in vals]
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
    parser.add_argument("--task", choices=["qa", "retrieval"], default="qa", help="what to evaluate")
    parser.add_argument("--dataset", choices=["xquad", "tydiqa-goldp"], default="xquad",
                        help="questions to ask (tydiqa-goldp: SQuAD-format <language>_tydiqa_<split>.json files; "
                             "the collection then defaults to that split's passages)")
    parser.add_argument("--split", default="test", help="XQuAD article-level split (train/dev/test, EVAL.md) or TyDi file split")
    parser.add_argument("--methods", default=None, help=f"comma-separated methods (qa: {','.join(QA_METHODS)}; "
                                                        f"retrieval: {','.join(RETRIEVAL_METHODS)})")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many questions per language, spread over the split's paragraphs "
                             "(one per paragraph first; the same questions in every language)")
    parser.add_argument("--batch-size", type=int, default=32, help="questions sent through the policy backend together")
    parser.add_argument("--out", default=None, help="output folder (default: <data home>/eval/<task>-<collection>-<split>)")
    Settings.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = settings_from_command_line(args, argv)
    if args.dataset == "tydiqa-goldp" and settings.collection == Settings.collection:
        settings.collection = "tydiqa-goldp" if args.split == "train" else f"tydiqa-goldp:{args.split}"
    if args.task == "retrieval" and args.dataset != "xquad":
        parser.error("--task retrieval uses XQuAD's parallel paragraphs; use --dataset xquad")
    default_methods = QA_METHODS if args.task == "qa" else RETRIEVAL_METHODS
    if args.dataset != "xquad":  # the oracle needs XQuAD's parallel paragraphs
        default_methods = [m for m in default_methods if m != "oracle"]
    methods = args.methods.split(",") if args.methods else list(default_methods)
    out = Path(args.out or data_home() / "eval" / f"{args.task}-{settings.collection.replace(':', '-')}-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    from crosearch_agent.policy import PolicyError

    timing = {}
    try:
        if args.task == "qa":
            results, rows, timing = run_qa(settings, args.dataset, args.split, methods, args.limit, args.batch_size)
            keys, key = list(QA_KEYS) + list(SUPPORT_KEYS), "f1"
        else:
            results, rows = run_retrieval(settings, args.split, methods, args.limit)
            keys, key = [f"recall@{k}" for k in KS] + ["mrr", "hidden"], "recall@5"
    except (StoreError, PolicyError, qa_data.DataNotFound, ValueError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    config = {"task": args.task, "dataset": args.dataset, "split": args.split, "methods": methods,
              "limit": args.limit, "batch_size": args.batch_size, "git_commit": git_commit(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), **vars(settings), "timing": timing}
    # Machine folders named by role: results are committed and read elsewhere.
    (out / "results.json").write_text(json.dumps({"config": portable(config), "results": results}, indent=2,
                                                 ensure_ascii=False))
    with open(out / "rows.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    table = markdown_table(results, keys, key)
    note = ("\nlatency_s is amortised: a batch's wall time divided by its questions. recall: the gold paragraph "
            "(in any language) was among the evidence shown to the policy (of an aligned item, the version shown). "
            "valid: every policy turn well formed, "
            "ending in an answer the policy closed itself.\n" if args.task == "qa" else
            f"\nrecall@k: the gold paragraph's version shown by one of the top k items. hidden: in the top {max(KS)} "
            "only as a passage aligned behind another one, which the item shows instead.\n")
    (out / "results.md").write_text(f"# {args.task}: {args.dataset} on {settings.collection}, {args.split}\n\n{table}{note}")
    png = out / f"{key.replace('@', '_at_')}.png"
    chart(results, key, png, f"{key}, {args.dataset} on {settings.collection} ({args.split})")
    print(table)
    print(f"wrote {out}/results.json, results.md, {png.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
