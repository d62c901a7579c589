"""Training cost: seconds per GRPO step of the cpu-smoke configuration, and its peak memory.

Runs `python -m training.grpo --config training/configs/cpu-smoke.yaml` in a subprocess
with a temporary data home (the built indexes linked in, the bundled weights shared through
`CROSEARCH_MODELS`), so nothing it writes reaches the real data home, then reads the step
times from its `log.csv`. Peak memory: the subprocess tree's resident memory sampled every
0.2 s, and the kernel's maximum resident set of the largest process (`wait4`). A quick run
skips the format warm-up (`--warmup false`: GRPO starts from the bundled base policy) and
makes one GRPO step with 24-token turns.
When training is missing or fails, the result says "not available" and why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import BenchResult, RssSampler, Table, not_available, stats

CONFIG = Path("training") / "configs" / "cpu-smoke.yaml"


def temporary_home(collection: str = "xquad-partial") -> Path:
    """A fresh data home whose `indexes/<collection>` links to the real one (read only)."""
    from crosearch_agent.config import data_home
    from crosearch_agent.store import collection_dir

    home = Path(tempfile.mkdtemp(prefix="crosearch-bench-train-"))
    real = collection_dir(collection, data_home())
    if real.is_dir():
        (home / "indexes").mkdir()
        # A link per collection, not to `indexes/` itself: a rebuild swaps folders by rename, which
        # then replaces the link inside the temporary home, never the real index.
        (home / "indexes" / real.name).symlink_to(real, target_is_directory=True)
    return home


def run_subprocess(cmd: list[str], env: dict, cwd: Path, log_path: Path, timeout: float) -> dict:
    """Run `cmd`, its output to `log_path`; return code, wall time and peak memory."""
    t = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with RssSampler(proc.pid) as sampler:
            deadline = time.monotonic() + timeout
            status, usage, timed_out = None, None, False
            while status is None:
                pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status, usage = st, ru
                elif time.monotonic() > deadline:
                    timed_out = True
                    os.killpg(proc.pid, 9)  # its own session: the trainer and anything it started
                    _, status, usage = os.wait4(proc.pid, 0)
                else:
                    time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "timed_out": timed_out, "wall_s": time.perf_counter() - t,
            "peak_tree_rss_mb": sampler.peak_mb, "maxrss_mb": usage.ru_maxrss / 1024}


def run(quick: bool = False, ctx: dict | None = None) -> BenchResult:
    from crosearch_agent.config import REPO_ROOT, models_home

    name = "training"
    config = REPO_ROOT / CONFIG
    if not (REPO_ROOT / "training" / "grpo.py").exists() or not config.exists():
        return not_available(name, f"{CONFIG} or training/grpo.py does not exist yet")
    overrides = ["--warmup", "false", "--steps", "1", "--max_new_tokens", "24"] if quick else []
    timeout = 600 if quick else 2400
    home = temporary_home()
    env = {**os.environ, "CROSEARCH_HOME": str(home), "CROSEARCH_MODELS": str(models_home()),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "training.grpo", "--config", str(CONFIG)] + overrides
    command = " ".join(["python", "-m", "training.grpo", "--config", str(CONFIG)] + overrides)
    result = BenchResult(name, config={"command": command, "warmup": not quick, "timeout_s": timeout,
                                       "data_home": "temporary (indexes linked, weights shared)"})
    try:
        log_path = home / "grpo.log"
        proc = run_subprocess(cmd, env, REPO_ROOT, log_path, timeout)
        from training.logs import read_rows

        rows = read_rows(home / "training" / config.stem / "log.csv")
        tail = log_path.read_text(errors="replace")[-1500:]
    finally:
        shutil.rmtree(home, ignore_errors=True)  # checkpoints of a 270M model are GBs
    result.memory = {"peak_tree_rss_mb": proc["peak_tree_rss_mb"], "maxrss_mb": proc["maxrss_mb"],
                     "method": "subprocess tree RSS sampled every 0.2 s; maxrss from wait4"}
    result.metrics = {"subprocess": proc, "steps": rows}
    if proc["returncode"] != 0 or not rows:
        why = "timed out" if proc["timed_out"] else f"exit code {proc['returncode']}"
        last = [line for line in tail.splitlines() if line.strip()][-3:]
        result.status = "not available"
        result.summary = f"`{command}` failed ({why}, {len(rows)} steps logged): {' | '.join(last)[:400]}"
        result.metrics["log_tail"] = tail
        return result
    step_s = [float(r["step_s"]) for r in rows if r.get("step_s") not in (None, "")]
    rollout_s = [float(r["rollout_s"]) for r in rows if r.get("rollout_s") not in (None, "")]
    s = stats(step_s)
    rollout_share = (sum(rollout_s) / sum(step_s)) if rollout_s and sum(step_s) else None
    result.metrics["step_s"] = s
    result.metrics["rollout_share"] = rollout_share
    result.metrics["startup_and_other_s"] = proc["wall_s"] - sum(step_s)
    result.tables.append(Table(f"GRPO, cpu-smoke{' without warm-up' if quick else ''} (bundled Gemma 3 270M, CPU)",
                               ["steps", "s/step (median)", "s/step (max)", "rollout share of a step",
                                "whole run s", "outside the steps s", "peak RSS MB (tree)", "maxrss MB (largest process)"],
                               [[len(step_s), s["median"], s["max"], f"{rollout_share:.0%}" if rollout_share else "-",
                                 proc["wall_s"], proc["wall_s"] - sum(step_s), proc["peak_tree_rss_mb"], proc["maxrss_mb"]]]))
    result.summary = (f"{s['median']:.1f} s per GRPO step (median of {len(step_s)}; "
                      f"rollouts {rollout_share:.0%} of it)" if rollout_share else
                      f"{s['median']:.1f} s per GRPO step (median of {len(step_s)})")
    result.summary += f"; whole run {proc['wall_s']:.0f} s{' incl. warm-up' if not quick else ''}"
    return result
