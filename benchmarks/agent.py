"""One question end to end, by stage, with 1 and 8 concurrent users.

A shared `Agent` (bundled policy, `xquad-partial`, default settings) answers XQuAD test
questions in every language. Each question's latency is split into stages: language
detection (the `LanguageStep`'s duration), retrieval (the `EvidenceStep`s: query encoding,
faiss, fusion) without alignment, alignment (`fusion.align`, timed by wrapping it) and
generation (the policy's `generate`, timed by wrapping it; with several users this includes
waiting for the shared model, which serves one call at a time). Users are threads calling
`Agent.run`; the alternative for 8 users is `Agent.run_batch`, one batched policy call per
turn for all 8 questions, timed again with `answer_script` off for the cost of keeping
answers to the question's scripts. Generation uses the vLLM engine when the generation
benchmark already started it in this process, else transformers.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.common import BenchResult, Table, fmt_ratio, ratio, sample_questions, stats

STAGES = ("detect", "retrieve", "align", "generate")


class StageClock:
    """Seconds spent per stage, kept per thread (each user thread asks its questions in turn)."""

    def __init__(self):
        self._local = threading.local()

    def reset(self) -> None:
        self._local.times = {s: 0.0 for s in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        if not hasattr(self._local, "times"):
            self.reset()
        self._local.times[stage] += seconds

    def take(self) -> dict:
        times = dict(getattr(self._local, "times", {s: 0.0 for s in STAGES}))
        self.reset()
        return times

    def wrap(self, stage: str, fn):
        def timed_call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - t)
        return timed_call


class TimedPolicy:
    """The policy with its `generate` timed into a `StageClock` (everything else passes through)."""

    def __init__(self, policy, clock: StageClock):
        self._policy, self._clock = policy, clock
        self.generate = clock.wrap("generate", policy.generate)

    def __getattr__(self, name):
        return getattr(self._policy, name)


def ask(agent, clock: StageClock, question: str) -> dict:
    """One question through `Agent.run`: wall time and seconds per stage."""
    from crosearch_agent.agent import EvidenceStep, LanguageStep

    clock.reset()
    t = time.perf_counter()
    retrieve, error, answered = 0.0, None, False
    for step in agent.run(question):
        if isinstance(step, LanguageStep):
            clock.add("detect", step.duration_s)
        elif isinstance(step, EvidenceStep):
            retrieve += step.duration_s
        elif step.kind == "error":
            error = step.message
        elif step.kind == "answer":
            answered = True
    wall = time.perf_counter() - t
    times = clock.take()
    times["retrieve"] = max(0.0, retrieve - times["align"])  # the evidence steps include alignment
    return {"wall_s": wall, **times, "error": error, "answered": answered}


def users(agent, clock: StageClock, questions: list[str], n_users: int) -> tuple[list[dict], float]:
    """`n_users` threads sharing the agent, the questions dealt out among them."""
    shares = [questions[i::n_users] for i in range(n_users)]
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n_users) as pool:
        per_user = list(pool.map(lambda qs: [ask(agent, clock, q) for q in qs], shares))
    return [r for rs in per_user for r in rs], time.perf_counter() - t


def summarise(records: list[dict], wall: float) -> dict:
    out = {"questions": len(records), "wall_s": wall, "questions_per_s": len(records) / wall if wall else None,
           "errors": sum(1 for r in records if r["error"]), "latency": stats([r["wall_s"] for r in records])}
    for s in STAGES:
        out[s] = stats([r[s] for r in records])
    return out


def run(quick: bool = False, ctx: dict | None = None) -> BenchResult:
    import torch

    import crosearch_agent.fusion as fusion_mod
    from crosearch_agent.agent import Agent
    from crosearch_agent.config import Settings
    from crosearch_agent.policy_folders import BUNDLED_POLICY, resolve_policy
    from crosearch_agent.policy import TransformersPolicy
    from crosearch_agent.retriever import load_retriever

    ctx = ctx if ctx is not None else {}
    torch.set_num_threads(ctx.get("threads", 1))
    # Quick: no worked examples in the prompt (about half the prompt tokens), short turns, and
    # two searches (the forced local and global ones), so one policy call per question.
    settings = Settings(collection="xquad-partial",
                        **(dict(max_new_tokens=32, few_shot=0, max_turns=2) if quick else {}))
    n_single, n_users = (2, 8) if quick else (12, 8)
    per_user = 1 if quick else 2
    policy = ctx.get("vllm")
    backend = "vllm (engine started by the generation benchmark)" if policy else "transformers"
    if policy is None:
        policy = TransformersPolicy(resolve_policy(BUNDLED_POLICY))
    clock = StageClock()
    agent = Agent(TimedPolicy(policy, clock), load_retriever(settings, verify=False), settings)
    questions = [q for q, _ in sample_questions(1 + n_single + n_users * per_user)]
    result = BenchResult("agent", config={"backend": backend, "collection": settings.collection,
                                          "max_new_tokens": settings.max_new_tokens, "few_shot": settings.few_shot,
                                          "max_turns": settings.max_turns, "k": settings.k,
                                          "questions_1_user": n_single, "questions_8_users": n_users * per_user,
                                          "torch_threads": ctx.get("threads", 1)})
    original_align = fusion_mod.align
    fusion_mod.align = clock.wrap("align", original_align)  # `fuse` looks it up at call time
    try:
        ask(agent, clock, questions[0])  # warm-up: first calls load the language identifier, allocate
        single, single_wall = users(agent, clock, questions[1:1 + n_single], 1)
        eight_qs = questions[1 + n_single:]
        eight, eight_wall = users(agent, clock, eight_qs, n_users)
        # The alternative for many users: their questions advance together, one batched call per turn.
        t = time.perf_counter()
        batched = agent.run_batch(eight_qs[:n_users])
        batch_wall = time.perf_counter() - t
        # What keeping answers to the question's scripts costs: the same batch with no answer
        # decoded again (those that do not fit cost more calls).
        free = Agent(agent.policy, agent.retriever, dataclasses.replace(settings, answer_script=False))
        t = time.perf_counter()
        free.run_batch(eight_qs[:n_users])
        free_wall = time.perf_counter() - t
    finally:
        fusion_mod.align = original_align
    one, many = summarise(single, single_wall), summarise(eight, eight_wall)
    batch = {"questions": len(batched), "wall_s": batch_wall, "questions_per_s": len(batched) / batch_wall,
             "latency": stats([r.latency_s for r in batched]), "errors": sum(1 for r in batched if r.error)}
    script_cost = ratio(batch_wall, free_wall)
    result.metrics = {"users_1": one, "users_8": many, "run_batch_8": batch,
                      "run_batch_8_free_answers_wall_s": free_wall, "answer_script_cost": script_cost}

    table = Table(f"Latency per question by stage, seconds (median / p95), {backend}",
                  ["users", "questions", "end to end", "detect", "retrieve (excl. align)", "align",
                   "generate (incl. waiting)", "questions/s"])
    for label, s in (("1", one), ("8 threads", many)):
        table.rows.append([label, s["questions"], f"{s['latency']['median']:.2f} / {s['latency']['p95']:.2f}"]
                          + [f"{s[st]['median']:.4f} / {s[st]['p95']:.4f}" for st in STAGES] + [s["questions_per_s"]])
    table.rows.append(["8, run_batch", batch["questions"],
                       f"{batch['latency']['median']:.2f} / {batch['latency']['p95']:.2f}", "-", "-", "-", "-",
                       batch["questions_per_s"]])
    result.tables.append(table)
    gen_share = one["generate"]["median"] / one["latency"]["median"] if one["latency"]["median"] else None
    slowdown = ratio(many["latency"]["median"], one["latency"]["median"])
    batch_gain = ratio(batch["questions_per_s"], many["questions_per_s"])
    result.summary = (f"1 user: median {one['latency']['median']:.1f} s, p95 {one['latency']['p95']:.1f} s "
                      f"(generation {gen_share:.0%}); 8 users: median {many['latency']['median']:.1f} s "
                      f"({fmt_ratio(slowdown)} of 1 user), {many['questions_per_s']:.2f} q/s; run_batch of 8: "
                      f"{fmt_ratio(batch_gain)} the throughput of 8 threads ({backend.split(' ')[0]}); answers kept "
                      f"to the question's scripts: {fmt_ratio(script_cost)} the time of free ones")
    errors = one["errors"] + many["errors"] + batch["errors"]
    if errors:
        first = next((r["error"] for r in single + eight if r["error"]), None) or next(
            (r.error for r in batched if r.error), None)
        result.metrics["first_error"] = first
        result.notes.append(f"{errors} question(s) ended in an error step (timed all the same); first: {first}")
    if batch_gain and batch_gain > 1.2:
        result.notes.append(f"Concurrent users of one Agent are served one policy call at a time (the backend's lock): "
                            f"8 threads reach {many['questions_per_s']:.2f} questions/s where batching the same "
                            f"questions reaches {batch['questions_per_s']:.2f} ({fmt_ratio(batch_gain)}). "
                            "A server that batches concurrent requests (vLLM's OpenAI server) would close that gap.")
    if gen_share and gen_share > 0.8:
        result.notes.append(f"Generation is {gen_share:.0%} of a question's latency for one user; detection "
                            f"({one['detect']['median'] * 1000:.1f} ms) and alignment ({one['align']['median'] * 1000:.1f} ms) "
                            "are negligible.")
    return result
