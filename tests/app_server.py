"""The real app as a subprocess for end-to-end tests: `python app.py` on a free port, with
its log in the data home's artifacts folder, up until the block ends."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crosearch_agent.config import REPO_ROOT, data_home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts_dir() -> Path:
    path = data_home() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def dev_questions(langs, n=1) -> dict[str, list[str]]:
    """Parallel XQuAD dev questions (never test): the same questions in each language."""
    from crosearch_agent.qa_data import xquad_questions

    by_lang = {lang: {q.id: q for q in xquad_questions([lang], "dev")} for lang in langs}
    ids = [i for i in by_lang[langs[0]] if all(i in by_lang[l] for l in langs)]
    return {lang: [by_lang[lang][i].question for i in ids[:n]] for lang in langs}


@contextlib.contextmanager
def running_app(flags: list[str], log_path: Path, ready_s: float = 300, collections=("xquad-partial",)):
    """Start the app (after building the indexes it offers: the first is the one it serves),
    yield its URL once it says it is ready, stop it afterwards."""
    from indexes import build

    for collection in collections:
        build.build(collection, log=lambda *_: None)  # skipped when up to date
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *flags], cwd=REPO_ROOT,
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_s
        while "[crosearch] ready in" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not get ready (exit code {proc.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()  # the app closes its policy (and vLLM's engine processes) on SIGTERM
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its process group is still there
        proc.wait()
