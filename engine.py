"""The serving engine behind the app: models, indexes, the served policy and one question's
run. No page and no Markdown here (`app.py` is the page); the `/ask` API and the chat both
drive `run_question`.

Threads: Gradio runs each request in a worker thread; model loading (start-up and "reload
policy") runs on the thread that calls `Engine.work` (the main one), where in-process engines
expect to be started. Requests that reach the policy at the same time are batched into one
backend call, one call at a time (the in-process backends are not thread-safe); retrieval
and the page go on meanwhile.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from concurrent.futures import Future

from crosearch_agent.agent import Agent, AnswerStep, ErrorStep, LanguageStep, Result, question_problem
from crosearch_agent.config import BUNDLED_EMBEDDER, Settings, uses_services
from crosearch_agent.languages import NAMES, detect
from crosearch_agent.policy import PolicyError, default_backend, per_prompt
from crosearch_agent.policy_folders import describe_policy
from crosearch_agent.support import explain

PREPARE_WAIT_S = 900        # a question waits this long for the first start's preparation


# ---------------------------------------------------------------- the served policy

class ServedPolicy:
    """The policy behind the app: swappable while serving, one backend call at a time.

    Requests that arrive while a call runs wait (on a condition, not polling) and then go
    together in the next call (each prompt with its own sampling), which is what the batched
    backends are good at. Whichever waiting request finds the backend free runs the next
    batch, its own or others'; it stops once its own request is answered.
    """
    backend = "none"

    def __init__(self, max_batch: int = 8, log=None):
        self.log = log or (lambda msg: None)
        self.inner = None
        self.problem = "the policy is still loading"
        self.max_batch = max_batch
        self._pending: list[tuple[list[str], object, Future]] = []
        self._changed = threading.Condition()
        self._busy = False  # a backend call (or a swap) is running

    @property
    def name(self) -> str:
        return getattr(self.inner, "name", "(none)")

    def generate(self, prompts, sampling):
        fut: Future = Future()
        with self._changed:
            self._pending.append((list(prompts), sampling, fut))
        while not fut.done():
            with self._changed:
                while self._busy and not fut.done():
                    self._changed.wait()
                if fut.done():
                    break
                self._busy, batch = True, self._next_batch()
            try:
                self._run(batch)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
        return fut.result()

    def _next_batch(self) -> list:
        if not self._pending:
            return []
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        return batch

    def _run(self, batch) -> None:
        if not batch:
            return
        try:
            if self.inner is None:
                raise PolicyError(f"no policy is loaded ({self.problem}); fix the backend settings and press 'Reload policy'")
            t = time.perf_counter()
            samplings = [s for prompts, sampling, _ in batch for s in per_prompt(sampling, len(prompts))]
            gens = self.inner.generate([p for prompts, _, _ in batch for p in prompts], samplings)
            if len(batch) > 1:
                self.log(f"[crosearch] {len(batch)} questions batched into one policy call ({time.perf_counter() - t:.1f} s)")
        except BaseException as err:  # every waiting request hears about it
            for *_, fut in batch:
                fut.set_exception(err)
            return
        start = 0
        for prompts, _, fut in batch:
            fut.set_result(gens[start:start + len(prompts)])
            start += len(prompts)

    def swap(self, new, problem: str = "") -> None:
        """Serve `new` from the next call on (None: serve nothing, say `problem`)."""
        with self._changed:
            while self._busy:
                self._changed.wait()
            old, self.inner, self.problem = self.inner, new, problem
            self.backend = getattr(new, "backend", "none")
        if old is not None and old is not new and hasattr(old, "close"):
            old.close()

    def close(self) -> None:
        """The app is stopping: close the backend now, even in the middle of a call (that
        call's requests fail; waiting for it could take minutes)."""
        inner, self.inner, self.problem = self.inner, None, "the app stopped"
        if inner is not None and hasattr(inner, "close"):
            inner.close()


class LanguageView:
    """A retriever restricted to some of its languages (the "languages to search" setting)."""

    def __init__(self, retriever, languages):
        self.retriever = retriever
        self.languages = [l for l in retriever.languages if l in set(languages)]

    def search(self, query, languages=None, k=5, query_lang=None):
        return self.retriever.search(query, languages or self.languages, k, query_lang)

    def concat(self, query, languages=None, k=5):
        return self.retriever.concat(query, languages or self.languages, k)


# ---------------------------------------------------------------- models, indexes, readiness

class Engine:
    """Everything the app serves: the embedder, retrievers per collection, the policy, and
    whether they are ready. Loading happens on the thread that calls `work` (the main one)."""

    def __init__(self, settings: Settings, log=None):
        self.settings, self.log = settings, log or (lambda msg: print(msg, flush=True))
        self.backend = settings.backend or default_backend()
        self.stage = "starting"
        self.error: str | None = None
        self.ready = threading.Event()
        self.embedder = None
        self.retrievers: dict[str, object] = {}
        self.policy = ServedPolicy(log=self.log)
        self._load_lock = threading.Lock()
        self.jobs: queue.Queue = queue.Queue()

    # -- the loader thread
    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        self.jobs.put((fn, args, fut))
        return fut

    def work(self, stop: threading.Event | None = None) -> None:
        """Run loading jobs until `stop` is set (the main thread does this while serving)."""
        while not (stop and stop.is_set()):
            try:
                fn, args, fut = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as err:
                fut.set_exception(err)
                if isinstance(err, (KeyboardInterrupt, SystemExit)):
                    raise  # stopping the app, not a failed job

    def _stage(self, text: str) -> None:
        self.stage = text
        self.log(f"[crosearch] {text}…")

    def prepare(self) -> None:
        """First start: bundled models, the default collection's index (built if missing), the policy."""
        from crosearch_agent.store import StoreError

        s = self.settings
        t0 = time.perf_counter()
        try:
            if s.embedder == BUNDLED_EMBEDDER and not uses_services(s):
                self._stage("materialising the bundled embedder")
                from crosearch_agent.bundled import materialise_embedder

                materialise_embedder()
            if not uses_services(s):
                self._stage("loading the embedder")
                from crosearch_agent.embedder import Embedder

                self.embedder = Embedder(s.embedder)
            self._stage(f"loading the index '{s.collection}'")
            try:
                self.retriever(s.collection)
            except StoreError as err:
                if uses_services(s):
                    raise
                self._stage(f"building the index '{s.collection}' (first start; about a minute): {err}")
                from indexes import build

                build.build(s.collection, s.languages, s.embedder, s.index_type, s.data_dir, log=self.log)
                self._stage(f"loading the index '{s.collection}'")
                self.retriever(s.collection)
            # Load the language identifiers now rather than during the first question.
            detect("warm-up", tuple(NAMES))
            detect("warm-up", tuple(self.retriever(s.collection).languages), s.detector)
        except Exception as err:  # the page stays up and says what went wrong
            self.error = f"{type(err).__name__}: {err}" if not isinstance(err, (StoreError, ValueError, OSError)) else str(err)
            self.log(f"[crosearch] could not prepare the index: {self.error}")
            self.stage = "failed"
            self.ready.set()
            return
        self._stage(f"loading the policy ({self.backend})")
        self.log(f"[crosearch] {self.load_policy(self.backend, s.policy, s.base_url)}")
        self.stage = "ready"
        self.log(f"[crosearch] ready in {time.perf_counter() - t0:.1f} s")
        self.ready.set()

    def load_policy(self, backend: str, policy: str | None, base_url: str | None) -> str:
        """Load a policy and serve it; on failure keep serving retrieval and say why."""
        from crosearch_agent.policy import load_policy

        kw = {"seed": self.settings.seed} if backend == "vllm" else {}
        try:
            new = load_policy(backend, policy, base_url, **kw)
        except Exception as err:  # PolicyError, or an engine's own failure
            problem = str(err) if isinstance(err, PolicyError) else f"{type(err).__name__}: {err}"
            if self.policy.inner is None:
                self.policy.swap(None, problem)
                return f"the policy could not be loaded: {problem}"
            return f"the policy could not be loaded ({problem}); still serving {self.policy.name}"
        self.backend = backend
        self.policy.swap(new)
        return f"policy: {describe_policy(new.name)} (backend: {backend})"

    def retriever(self, collection: str):
        """The retriever of a collection, loaded once (StoreError when it has no index)."""
        with self._load_lock:
            if collection not in self.retrievers:
                from crosearch_agent.retriever import load_retriever

                s = dataclasses.replace(self.settings, collection=collection)
                self.retrievers[collection] = load_retriever(s, embedder=self.embedder)
            return self.retrievers[collection]


# ---------------------------------------------------------------- one question

@dataclasses.dataclass
class Options:
    """Per-question settings from the page (None: the app's default)."""
    collection: str | None = None
    languages: list[str] | None = None
    k: int | None = None
    max_turns: int | None = None
    temperature: float | None = None


def language_note(question: str, step: LanguageStep, indexed: list[str]) -> str:
    """A remark when the question is in a language without an index here (the agent detects
    it, searches every index and answers in the question's language)."""
    if step.lang in indexed:
        return ""
    return (f"{step.reason or f'There is no {NAMES.get(step.lang, step.lang)} index here.'} "
            f"(Indexed: {', '.join(indexed)}.)")


def run_question(engine: Engine, question: str, opts: Options):
    """The events of one question: ("wait", stage) while preparing, then ("step", Step, note)."""
    problem = question_problem(question)
    if problem:
        yield "step", ErrorStep("error", message=problem, cause="question"), ""
        return
    deadline = time.monotonic() + PREPARE_WAIT_S
    while not engine.ready.wait(0.5):
        if time.monotonic() > deadline:
            yield "step", ErrorStep("error", message="CroSearch is still preparing its models; please try again later."), ""
            return
        yield "wait", engine.stage, ""
    if engine.error:
        yield "step", ErrorStep("error", message=f"CroSearch could not prepare its index: {engine.error}", cause="index"), ""
        return
    from crosearch_agent.store import StoreError

    s = engine.settings
    collection = opts.collection or s.collection
    try:
        retriever = engine.retriever(collection)
    except (StoreError, ValueError, OSError) as err:
        yield "step", ErrorStep("error", message=f"No usable index for collection '{collection}': {err}", cause="index"), ""
        return
    if opts.languages and set(retriever.languages) - set(opts.languages):
        retriever = LanguageView(retriever, opts.languages)
        if not retriever.languages:
            yield "step", ErrorStep("error", message=f"None of the selected languages has an index in '{collection}' "
                                                      f"(it has {', '.join(retriever.retriever.languages)})."), ""
            return
    settings = dataclasses.replace(s, collection=collection, **{f: getattr(opts, f) for f in ("k", "max_turns", "temperature")
                                                                if getattr(opts, f) is not None})
    agent = Agent(engine.policy, retriever, settings)
    steps = []
    for step in agent.run(question):
        steps.append(step)
        note = language_note(question, step, retriever.languages) if isinstance(step, LanguageStep) else ""
        if isinstance(step, AnswerStep):  # which passage it came from, and whether the versions agree
            try:
                explain(Result(question.strip(), step.lang, step.text, steps), engine.embedder)
            except Exception as err:  # an explanation that fails must not cost the answer
                engine.log(f"[crosearch] support: {type(err).__name__}: {err}")
        yield "step", step, note
