"""Load: 24 questions in 12 languages from 8 concurrent clients against the real app (the
vLLM engine on the bundled policy), through its headless API with `gradio_client`. Every
request must be answered with its own question's record; errors and lost requests are
counted, and the latencies are written to the data home's artifacts folder."""
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from crosearch_agent.languages import XQUAD_LANGS
from tests.app_server import artifacts_dir, dev_questions, running_app

pytestmark = pytest.mark.slow

N_QUESTIONS, N_CLIENTS = 24, 8
# Short prompts (no worked example, 3 passages per search) and turns keep the questions to
# minutes on 2 cores; the serving path (queue, batching, vLLM) is the one users get.
APP_FLAGS = ["--backend", "vllm", "--few-shot", "0", "--k", "3", "--max-new-tokens", "24", "--max-turns", "2",
             "--concurrency", str(N_CLIENTS)]


def mixed_questions() -> list[str]:
    """Dev questions (never test), round-robin over the 12 languages."""
    per_lang = dev_questions(list(XQUAD_LANGS), n=N_QUESTIONS // len(XQUAD_LANGS) + 1)
    mixed = [per_lang[lang][i] for i in range(len(next(iter(per_lang.values())))) for lang in XQUAD_LANGS]
    return mixed[:N_QUESTIONS]


def test_questions_in_twelve_languages_from_eight_clients_are_all_answered(shared_data):
    from gradio_client import Client

    questions = mixed_questions()
    artifacts = artifacts_dir()
    with running_app(APP_FLAGS, artifacts / "app_load.log", ready_s=600) as url:
        def client(share: list[str]) -> list[dict]:
            c = Client(url, verbose=False)  # one connection per user
            out = []
            for q in share:
                t = time.monotonic()
                try:
                    r = c.predict(q, api_name="/ask")
                    out.append({"question": q, "record": r, "error": r.get("error"), "s": time.monotonic() - t})
                except Exception as err:  # a transport failure counts as an error, not a lost request
                    out.append({"question": q, "record": None, "error": f"{type(err).__name__}: {err}",
                                "s": time.monotonic() - t})
            return out

        shares = [questions[i::N_CLIENTS] for i in range(N_CLIENTS)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(N_CLIENTS) as pool:
            results = [r for share in pool.map(client, shares) for r in share]
        elapsed = time.monotonic() - t0

    latencies = sorted(r["s"] for r in results)
    errors = [r for r in results if r["error"]]
    mismatched = [r for r in results if r["record"] and r["record"]["question"] != r["question"]]
    report = {"questions": len(questions), "clients": N_CLIENTS, "answered": len(results) - len(errors),
              "errors": len(errors), "lost": len(questions) - len(results), "wall_s": round(elapsed, 1),
              "questions_per_min": round(60 * len(results) / elapsed, 1),
              "median_s": round(statistics.median(latencies), 1),
              "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
              "error_messages": sorted({r["error"] for r in errors})[:5]}
    (artifacts / "app_load.json").write_text(json.dumps(report, indent=1))
    print("load:", report)
    assert report["lost"] == 0 and not mismatched
    assert report["errors"] == 0, report["error_messages"]
    for r in results:
        steps = r["record"]["steps"]
        assert any(s["kind"] == "evidence" and s["items"] for s in steps) and steps[-1]["kind"] == "answer"
