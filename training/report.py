"""`python -m training.report`: what training bought, side by side.

Reads the `results.json` of several `python -m crosearch_agent.eval` runs of one method with
different policies (base, after warm-up, after GRPO, GRPO without multilingual rollouts) and
the `log.csv` of GRPO runs, and writes one Markdown table, per-language charts of the evals,
one chart of the runs' reward curves, and `evals.json` (the compared results with their
configurations, machine folders named by role, fit to commit):

    python -m training.report --eval base=DIR --eval warmup=DIR --eval grpo=DIR \\
        --run multilingual=RUN_DIR --run one-language=RUN_DIR --out DIR

The evals must have been run with the same questions and agent options (the command lines
are compared, and differences named in the report).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crosearch_agent.config import portable
from crosearch_agent.eval import QA_KEYS, chart, markdown_table
from training.logs import column, read_rows

# Eval options that may differ between the compared runs (everything else must match).
PER_RUN = {"policy", "git_commit", "date", "timing", "out", "backend", "base_url", "batch_size"}
CURVES = ("reward", "reward_answer", "reward_format", "reward_language", "format_valid_rate", "kl")


def served_policy(config: dict) -> str:
    """The policy an eval named, or the one it served when it named none (the default)."""
    return config.get("policy") or f"default: {(config.get('timing') or {}).get('policy')}"


def labelled(items: list[str], what: str) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--{what} takes LABEL=PATH, not {item!r}")
        out.append((label, Path(path)))
    return out


def load_evals(evals: list[tuple[str, Path]], method: str) -> tuple[dict, list[str], dict]:
    """{label: that eval's results for `method`}, the config differences, and each eval's
    configuration (machine folders replaced by their role)."""
    results, configs = {}, {}
    for label, folder in evals:
        path = folder / "results.json" if folder.is_dir() else folder
        data = json.loads(path.read_text(encoding="utf-8"))
        if method not in data["results"]:
            raise ValueError(f"{path} has no results for method {method!r} (it has {sorted(data['results'])})")
        results[label], configs[label] = data["results"][method], portable(data["config"])
    first, *rest = configs
    differences = []
    for label in rest:
        for key in sorted(set(configs[first]) | set(configs[label])):
            if key not in PER_RUN and configs[first].get(key) != configs[label].get(key):
                differences.append(f"{key}: {first}={configs[first].get(key)!r}, {label}={configs[label].get(key)!r}")
    return results, differences, configs


def plot_runs(runs: list[tuple[str, list[dict]]], path: Path, title: str) -> None:
    """One panel per logged curve, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(CURVES), 1, figsize=(7, 2.0 * len(CURVES)), sharex=True)
    for ax, name in zip(axes, CURVES):
        for label, rows in runs:
            ax.plot([int(r["step"]) for r in rows], column(rows, name), marker="o", markersize=3, label=label)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title(title)
    axes[-1].set_xlabel("GRPO step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mean(rows: list[dict], name: str) -> float:
    """Mean of a logged column over the steps that logged it (NaN if none did)."""
    vals = [v for v in column(rows, name) if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def run_table(runs: list[tuple[str, list[dict]]]) -> str:
    """Mean of each curve over the first and the last quarter of each run's steps."""
    lines = ["| run | steps | " + " | ".join(f"{c} (first → last quarter)" for c in CURVES) + " | s/step |",
             "|---|---|" + "---|" * (len(CURVES) + 1)]
    for label, rows in runs:
        q = max(1, len(rows) // 4)
        cells = [f"{_mean(rows[:q], c):.3f} → {_mean(rows[-q:], c):.3f}" for c in CURVES]
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + f" | {_mean(rows, 'step_s'):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.splitlines()[0])
    parser.add_argument("--eval", action="append", default=[], metavar="LABEL=DIR",
                        help="an eval output folder (or its results.json), in the order to show")
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=DIR",
                        help="a GRPO run folder (<data home>/training/<name>) holding log.csv")
    parser.add_argument("--method", default="crosearch", help="the eval method to compare (default: %(default)s)")
    parser.add_argument("--out", required=True, help="folder for report.md and the PNG charts")
    args = parser.parse_args(argv)
    if not args.eval and not args.run:
        parser.error("give at least one --eval or --run")
    try:
        return report(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def report(args) -> int:
    """Write report.md, evals.json and the charts for the parsed command line."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# Training report", ""]
    if args.eval:
        results, differences, configs = load_evals(labelled(args.eval, "eval"), args.method)
        parts += [f"Eval method `{args.method}`; policies: "
                  + "; ".join(f"{l} = `{served_policy(c)}`" for l, c in configs.items()), ""]
        if differences:
            parts += ["**The evals differ in more than the policy:**", ""] + [f"- {d}" for d in differences] + [""]
        parts.append(markdown_table(results, list(QA_KEYS), "f1"))
        (out / "evals.json").write_text(json.dumps({label: {"config": configs[label], "results": results[label]}
                                                    for label in results}, indent=2, ensure_ascii=False), encoding="utf-8")
        for key in ("f1", "valid"):
            chart(results, key, out / f"eval_{key}.png", f"{key} by policy ({args.method})")
    if args.run:
        runs = []
        for label, folder in labelled(args.run, "run"):
            rows = read_rows(folder / "log.csv")
            if not rows:
                raise ValueError(f"{folder / 'log.csv'} is missing or empty")
            runs.append((label, rows))
        parts += ["", "GRPO runs:", "", run_table(runs)]
        plot_runs(runs, out / "grpo_curves.png", "GRPO runs")
    (out / "report.md").write_text("\n".join(parts), encoding="utf-8")
    print("\n".join(parts))
    print(f"wrote {out}/report.md, its charts{' and evals.json' if args.eval else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
