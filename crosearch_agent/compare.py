"""`python -m crosearch_agent.compare A B [--against METHOD]`: how far apart two evals are, paired
per question, and how many questions the difference is worth.

Two eval folders (their `rows.jsonl`, as `crosearch_agent.eval` writes them) are compared on the
questions both answered, method by method: the mean of each, the mean difference B - A with its
standard error, and how many questions got better or worse. With `--against METHOD` one folder
is enough: every other method is compared with METHOD on the same questions (e.g. crosearch
against concat_rag). A difference within about two standard errors is not a finding.

XQuAD asks each question in all 12 languages, and the translations of one question tend to be
right or wrong together, so 360 answers are far fewer independent ones. A second standard error
treats every question id as one unit (the cluster-robust estimate over its translations); use it
to say how many questions a difference is worth.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

SUBSETS = ("all", "local", "cross")


@dataclass
class Paired:
    """One method and subset: B against A on the same `n` questions."""
    method: str
    subset: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    stderr: float
    stderr_together: float  # the translations of one question counted as one unit
    questions: int          # distinct question ids (units of stderr_together)
    better: int
    worse: int


def read_rows(folder: str | Path) -> list[dict]:
    """The per-question rows of an eval folder (or of a rows.jsonl file)."""
    path = Path(folder)
    path = path / "rows.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no eval rows at {path}: give an eval folder (python -m crosearch_agent.eval --out DIR)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _by_question(rows: list[dict], method: str, metric: str) -> dict[tuple, tuple[str, float]]:
    return {(r["id"], r["query_lang"]): (r.get("subset", "all"), float(r.get(metric) or 0.0))
            for r in rows if r["method"] == method}


def paired(a: dict, b: dict, method: str, subset: str) -> Paired | None:
    """B - A over the questions both have (`{question: (subset, score)}`), in `subset`."""
    keys = [k for k in a if k in b and (subset == "all" or a[k][0] == subset)]
    if not keys:
        return None
    diffs = [b[k][1] - a[k][1] for k in keys]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    units = _residual_sums(keys, diffs, mean)
    return Paired(method, subset, n, sum(a[k][1] for k in keys) / n, sum(b[k][1] for k in keys) / n, mean,
                  math.sqrt(var / n), _clustered_stderr(units, n), len(units),
                  sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))


def _residual_sums(keys, diffs, mean) -> list[float]:
    """Per question id (the key's first part), the sum of its translations' d - mean."""
    sums: dict[str, float] = {}
    for (qid, *_), d in zip(keys, diffs):
        sums[qid] = sums.get(qid, 0.0) + d - mean
    return list(sums.values())


def _clustered_stderr(sums: list[float], n: int) -> float:
    """The cluster-robust standard error of a mean of `n` values from the units' residual sums;
    with one value per unit it is the plain standard error."""
    g = len(sums)
    return math.sqrt(g / (g - 1) * sum(s * s for s in sums)) / n if g > 1 else 0.0


def compare_runs(rows_a: list[dict], rows_b: list[dict], metric: str = "f1") -> list[Paired]:
    """Every method both runs have, per subset."""
    methods = list(dict.fromkeys(r["method"] for r in rows_a if any(s["method"] == r["method"] for s in rows_b)))
    return [p for m in methods for s in SUBSETS
            if (p := paired(_by_question(rows_a, m, metric), _by_question(rows_b, m, metric), m, s))]


def compare_methods(rows: list[dict], against: str, metric: str = "f1") -> list[Paired]:
    """Every other method of one run against `against`, on the same questions."""
    base = _by_question(rows, against, metric)
    if not base:
        raise ValueError(f"the eval has no rows of method {against!r}")
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != against]
    return [p for m in methods for s in SUBSETS if (p := paired(base, _by_question(rows, m, metric), m, s))]


def markdown(results: list[Paired], name_a: str, name_b: str, metric: str) -> str:
    lines = [f"| method | subset | n | {metric} {name_a} | {metric} {name_b} | difference | "
             "+- translations together (questions) | better / worse |",
             "|---|---|---|---|---|---|---|---|"]
    for p in results:
        lines.append(f"| {p.method} | {p.subset} | {p.n} | {p.mean_a:.3f} | {p.mean_b:.3f} | "
                     f"{p.diff:+.3f} +- {p.stderr:.3f} | +- {p.stderr_together:.3f} ({p.questions}) | "
                     f"{p.better} / {p.worse} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crosearch_agent.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="an eval folder (its rows.jsonl): the reference")
    parser.add_argument("b", nargs="?", help="a second eval folder, compared with the first")
    parser.add_argument("--against", metavar="METHOD", help="compare every method of A with this one of A")
    parser.add_argument("--metric", default="f1", help="a per-question score of the rows (f1, em, em_any, lang, valid)")
    args = parser.parse_args(argv)
    if (args.b is None) == (args.against is None):
        parser.error("give a second eval folder or --against METHOD")
    try:
        rows_a = read_rows(args.a)
        if args.against:
            results, names = compare_methods(rows_a, args.against, args.metric), (args.against, "method")
        else:
            results, names = compare_runs(rows_a, read_rows(args.b), args.metric), ("A", "B")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not results:
        print("error: the two evals share no question of any method", file=sys.stderr)
        return 1
    print(markdown(results, *names, args.metric), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
