"""Per-step training logs: one CSV row per GRPO step (each reward component, KL, loss, format-
valid rate, mean searches, share of cross-lingual searches, step time) and a PNG of the curves;
the warm-up's loss curve."""
from __future__ import annotations

import csv
import time
from pathlib import Path

from transformers import TrainerCallback

COLUMNS = ("step", "time_s", "step_s", "reward", "reward_answer", "reward_format", "reward_language", "reward_std",
           "kl", "loss", "learning_rate", "format_valid_rate", "answered_rate", "mean_searches",
           "cross_lingual_search_share", "policy_tokens", "env_tokens", "rollout_s", "rss_mb", "peak_rss_mb")
# TRL's log keys for the columns that come from it.
TRL_KEYS = {"reward": "reward", "reward_answer": "rewards/answer/mean", "reward_format": "rewards/format/mean",
            "reward_language": "rewards/language/mean", "reward_std": "reward_std", "kl": "kl", "loss": "loss",
            "learning_rate": "learning_rate"}
PLOTS = (("reward_answer", "reward_format", "reward_language"), ("format_valid_rate", "cross_lingual_search_share"),
         ("mean_searches",), ("kl",), ("step_s",))


def peak_rss_mb() -> float:
    """The kernel's high-water mark; it lags the resident size now (synced now and then)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def rss_mb() -> float:
    """Resident memory now; beside the peak it tells a leak (both climb) from one large step."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory_mb() -> tuple[float, float]:
    """Resident memory now and the process's peak, in MB (the peak taken no lower than now)."""
    now = rss_mb()
    return now, max(peak_rss_mb(), now)


def read_rows(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def column(rows: list[dict], name: str) -> list[float]:
    """One logged column as numbers; a blank cell (not logged that step) is NaN."""
    return [float(r[name]) if r.get(name) not in (None, "") else float("nan") for r in rows]


def write_rows(path: Path, rows: list[dict]) -> None:
    tmp = Path(path).with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def plot(rows: list[dict], path: Path, title: str = "") -> None:
    """Curves of the logged columns, one panel per group of related ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PLOTS), 1, figsize=(7, 2.2 * len(PLOTS)), sharex=True)
    steps = [int(r["step"]) for r in rows]
    for ax, names in zip(axes, PLOTS):
        for name in names:
            ax.plot(steps, column(rows, name), marker="o", markersize=3, label=name)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("GRPO step")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


class StepLogger(TrainerCallback):
    """Writes `log.csv` and `curves.png` in the run folder as training goes; on resume it
    keeps the rows up to the checkpoint's step."""

    def __init__(self, run_dir: Path, stats, title: str = "", resume_step: int | None = None):
        self.csv, self.png = Path(run_dir) / "log.csv", Path(run_dir) / "curves.png"
        self.stats, self.title = stats, title
        self.rows = [r for r in read_rows(self.csv) if resume_step is not None and int(r["step"]) <= resume_step]
        self.t0 = time.perf_counter() - self.elapsed
        self.step_start = None

    @property
    def elapsed(self) -> float:
        """Seconds of training up to the last step logged, over every leg of a resumed run."""
        return float(self.rows[-1]["time_s"]) if self.rows else 0.0

    def on_step_begin(self, args, state, control, **kw):
        self.step_start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "reward" not in logs:  # the end-of-training summary, not a step
            return
        resident, peak = memory_mb()
        row = {"step": state.global_step, "time_s": round(time.perf_counter() - self.t0, 1),
               "step_s": round(time.perf_counter() - self.step_start, 1) if self.step_start else "",
               "rss_mb": round(resident), "peak_rss_mb": round(peak)}
        row.update({col: logs.get(key, "") for col, key in TRL_KEYS.items()})
        row.update({k: round(v, 4) if isinstance(v, float) else v for k, v in self.stats.take().items()})
        self.rows.append(row)
        if state.is_world_process_zero:
            write_rows(self.csv, self.rows)

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero and self.rows:
            plot(self.rows, self.png, self.title)

    def on_train_end(self, args, state, control, **kw):
        self.on_save(args, state, control)


def plot_warmup_loss(history: list[dict], path: Path, title: str = "", window: int = 10) -> int:
    """The warm-up's loss per optimizer step (a trainer's `log_history`) and its running mean
    over `window` steps, as a PNG; returns the number of steps drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    if not points:
        return 0
    steps, losses = zip(*points)
    mean = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
            for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    ax.plot(steps, mean, lw=2, label=f"mean of {window} steps")
    ax.set_xlabel("warm-up step")
    ax.set_ylabel("loss on teacher tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return len(points)
