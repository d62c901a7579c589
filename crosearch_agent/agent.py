"""The multi-turn cross-lingual search loop, as typed step events.

One question goes: detect its language -> (turn 1) search the question's own language
(local) -> (later turns) search every language (global expansion, through the retriever's
alignment and rank fusion) -> answer in the question's language. Each thing that happens is
a `Step` (for the UI to stream and for logs); `Agent.run` yields them as they happen and
`Agent.answer` collects them into one `Result`.

Many questions advance in lock-step through `Agent.run_batch`: each turn, every open
trajectory's prompt goes to the backend in one batch, which is what vLLM is good at. The
single-question path is the same code with a batch of one.

Each turn's prompt is rendered from the canonical history (the policy's turns as parsed).
Beside it every trajectory keeps a `Record`: what the policy was shown and what it said, in
order, each piece tagged as the environment's or the policy's, the policy's with the token ids
it sampled. Training reads the record (its rollouts continue each trajectory from exactly the
tokens sampled so far) through a `RecordBackend`.

`method` selects the evaluation's baselines with the same machinery: `closed_book` (no
retrieval), `mono_rag` / `concat_rag` (one retrieval with the question, then answer),
`oracle` (one retrieval from a retriever that returns the gold paragraph: the reading
diagnostic) and `crosearch` (the agent).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from crosearch_agent import prompts
from crosearch_agent.evidence import MAX_K, Evidence, Searcher, not_searched, unseen
from crosearch_agent.languages import NAMES as lang_names, detect, name as lang_name
from crosearch_agent.policy import Generation, PolicyError, Sampling
from crosearch_agent.token_scripts import answer_scripts, text_fits

METHODS = ("closed_book", "mono_rag", "concat_rag", "oracle", "crosearch")
ONE_SEARCH = ("mono_rag", "concat_rag", "oracle")  # one retrieval with the question, then answer
MAX_QUESTION_CHARS = 2000


def question_problem(question: str | None) -> str | None:
    """What is wrong with a question before anything runs (empty, too long), in the words
    the user sees; None when it can be asked."""
    q = (question or "").strip()
    if not q:
        return "Please type a question."
    if len(q) > MAX_QUESTION_CHARS:
        return f"The question is {len(q):,} characters long; please keep it under {MAX_QUESTION_CHARS:,}."
    return None


# ---------------------------------------------------------------- step events

@dataclass
class Step:
    kind: str                 # language | think | search | evidence | answer | error
    t: float = 0.0            # seconds since the question arrived
    duration_s: float = 0.0   # how long this step took


@dataclass
class LanguageStep(Step):
    lang: str = ""
    confidence: float = 0.0
    fallback: bool = False
    reason: str = ""


@dataclass
class ThinkStep(Step):
    text: str = ""
    turn: int = 0


@dataclass
class SearchStep(Step):
    query: str = ""
    languages: list[str] = field(default_factory=list)
    scope: str = "local"      # local (the question's language) or global (every language)
    turn: int = 0


@dataclass
class EvidenceStep(Step):
    items: list[Evidence] = field(default_factory=list)
    turn: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # language -> why it was not searched (its service was down)
    read_lang: str = ""  # the question's language: each item's version in it (if any) is the one the policy read

    @property
    def languages(self) -> list[str]:
        return sorted({l for item in self.items for l in item.languages})


@dataclass
class AnswerStep(Step):
    text: str = ""
    lang: str = ""
    forced: bool = False      # the policy never closed <answer> (cut at the token limit), or wrote none
    support: list = field(default_factory=list)  # support.Support items, when the caller looked (app, eval)
    agreement: object = None                      # support.Agreement of the versions, likewise


@dataclass
class ErrorStep(Step):
    message: str = ""
    cause: str = ""  # "question" (refused input), "backend" (the language model failed), "index", "" (other)


# ---------------------------------------------------------------- what the policy saw and said

POLICY, ENVIRONMENT = "policy", "environment"


@dataclass
class Piece:
    source: str                                               # POLICY or ENVIRONMENT
    text: str
    token_ids: list[int] = field(default_factory=list)        # a policy turn's ids, as sampled
    logprobs: list[float] = field(default_factory=list)       # and their sampling log-probabilities


@dataclass
class Record:
    """One trajectory as the policy met it: the question's prompt (instructions, examples, the
    question, the first turn opened), then pieces in order. The environment's pieces are the
    forced searches, `<information>` blocks and each turn's opening; the policy's are its
    turns as generated, which may differ from the canonical form the next prompt shows.
    With canonical turns, `text()` is exactly the prompt the policy is continuing."""
    prompt: str = ""
    pieces: list[Piece] = field(default_factory=list)
    opening: str = ""  # the turn opening the text ends with ("<think>", "<answer>"), "" after the policy spoke

    def text(self) -> str:
        return self.prompt + "".join(p.text for p in self.pieces)

    @property
    def turns(self) -> list[str]:
        return [p.text for p in self.pieces if p.source == POLICY]

    def environment(self, block: str) -> None:
        """A block of the environment's (a search with its results, or only the results of
        the policy's search): it continues the turn the text opened when it starts with that
        opening, and otherwise starts on a new line."""
        if self.opening and block.startswith(self.opening):
            block = block[len(self.opening):]
        else:
            block = "\n" + block
        self._add_environment(block)
        self.opening = ""

    def open_turn(self, opening: str, first_prompt: str) -> None:
        """Make the text end with `opening`, the way the turn's prompt does. Before anything
        was added, the question's prompt is the turn's whole prompt (`first_prompt`)."""
        if opening == self.opening:
            return
        if not self.pieces:
            self.prompt = first_prompt
        else:
            self._add_environment("\n" + opening)
        self.opening = opening

    def policy(self, gen: Generation) -> None:
        self.pieces.append(Piece(POLICY, gen.text + (gen.stop or ""), list(gen.token_ids), list(gen.logprobs)))
        self.opening = ""

    def _add_environment(self, text: str) -> None:
        if self.pieces and self.pieces[-1].source == ENVIRONMENT:
            self.pieces[-1].text += text
        else:
            self.pieces.append(Piece(ENVIRONMENT, text))


@dataclass
class Result:
    question: str
    lang: str
    answer: str | None
    steps: list[Step]
    trajectory: str = ""
    latency_s: float = 0.0
    malformed_turns: int = 0  # policy turns that were not well formed
    record: Record = field(default_factory=Record)

    @property
    def format_valid(self) -> bool:
        """Every policy turn well formed, ending in an answer the policy closed itself."""
        answer = next((s for s in self.steps if isinstance(s, AnswerStep)), None)
        return answer is not None and not answer.forced and self.malformed_turns == 0 and self.error is None

    @property
    def searches(self) -> list[SearchStep]:
        return [s for s in self.steps if isinstance(s, SearchStep)]

    @property
    def evidence(self) -> list:
        return [item for s in self.steps if isinstance(s, EvidenceStep) for item in s.items]

    @property
    def error(self) -> str | None:
        return next((s.message for s in self.steps if isinstance(s, ErrorStep)), None)

    @property
    def backend_failed(self) -> bool:
        """The run stopped because the language model failed (not the question or the index)."""
        return any(isinstance(s, ErrorStep) and s.cause == "backend" for s in self.steps)


# ---------------------------------------------------------------- one trajectory

class Trajectory:
    """The state of one question in the loop: what has been said, what comes next.

    Public for backends that continue trajectories themselves (`RecordBackend`): `record`,
    `question`, `lang`, `steps`, `searches`, `must_answer`, `agent` and `prompt_text` (the
    prompt of the current turn) are theirs to read, never to change."""

    def __init__(self, agent: "Agent", question: str, lang: str | None = None):
        self.agent, self.question = agent, question
        self.t0 = time.perf_counter()
        self.steps: list[Step] = []
        self.history = ""
        self.turn = 0
        self.searches = 0
        self.done = False
        self.answer: str | None = None
        self.must_answer = False
        self.lang = lang or ""
        self.search_all = False
        self.scope = ""           # of the last search
        self.prefill = ""         # text the prompt ends with, for the policy to continue
        self.prompt_text = ""
        self.malformed = 0
        self.record = Record()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def emit(self, step: Step) -> Step:
        step.t = self.now()
        self.steps.append(step)
        return step

    def fail(self, message: str, cause: str = "") -> None:
        self.emit(ErrorStep("error", message=message, cause=cause))
        self.done = True

    # -- start
    def start(self) -> None:
        if problem := question_problem(self.question):
            return self.fail(problem, cause="question")
        q = self.question = self.question.strip()
        t = time.perf_counter()
        languages = self.agent.retriever.languages if self.agent.retriever else [self.lang or "en"]
        det = detect(q, languages, self.agent.settings.detector)
        if self.lang and self.lang in languages:  # the caller knows better (evaluation)
            det = type(det)(self.lang, 1.0)
        else:
            det = _unindexed(q, det, languages, self.agent.settings.detector)
        self.lang, self.search_all = det.lang, det.fallback
        self.record = Record(prompts.build_prompt(q, self.lang, "", few_shot=self.agent.settings.few_shot),
                             opening=prompts.THINK_OPEN)
        self.emit(LanguageStep("language", duration_s=time.perf_counter() - t, lang=det.lang,
                               confidence=det.confidence, fallback=det.fallback, reason=det.reason))
        method = self.agent.method
        settings = self.agent.settings
        if method in ONE_SEARCH or (method == "crosearch" and settings.force_first_search):
            think = "I need to search for this."
            self.emit(ThinkStep("think", text=think, turn=1))
            self.search(q, think, by_policy=False)
        if (method == "crosearch" and settings.force_first_search and settings.force_global_search
                and not self.done and not self.must_answer and self.scope == "local"):
            think = "I also search the other languages."
            self.emit(ThinkStep("think", text=think, turn=2))
            self.search(q, think, by_policy=False)
        if method != "crosearch" or self.agent.settings.max_turns <= 0:
            self.must_answer = True

    # -- searching
    def search(self, query: str, think: str, by_policy: bool = True) -> None:
        agent = self.agent
        self.turn += 1
        self.searches += 1
        all_langs = agent.retriever.languages
        if self.lang not in all_langs:  # a language with no index: every index at once
            scope, langs = "global", list(all_langs)
        elif agent.method == "concat_rag" or self.search_all or self.searches > 1:
            scope, langs = "global", [self.lang] + [l for l in all_langs if l != self.lang]
        else:
            scope, langs = "local", [self.lang]
        self.scope = scope
        self.emit(SearchStep("search", query=query, languages=langs, scope=scope, turn=self.turn))
        t = time.perf_counter()
        try:
            if agent.method == "concat_rag":
                items = agent.retriever.concat(query, langs, agent.settings.k)
            elif agent.settings.repeat_evidence or not (shown := self.shown_passages()):
                items = agent.retriever.search(query, langs, agent.settings.k, query_lang=self.lang)
            else:  # as many more as items were shown: each can take the place of one new item
                wanted = min(agent.settings.k + self.shown_items(), max(agent.settings.k, MAX_K))
                items = unseen(agent.retriever.search(query, langs, wanted, query_lang=self.lang), shown, agent.settings.k)
        except Exception as err:  # a broken index must not take the conversation down
            return self.fail(f"Search failed: {err}")
        self.emit(EvidenceStep("evidence", duration_s=time.perf_counter() - t, items=items, turn=self.turn,
                               missing=not_searched(items), read_lang=self.lang))
        turn = (f"{prompts.THINK_OPEN}{think}{prompts.THINK_CLOSE}\n"
                f"{prompts.SEARCH_OPEN}{prompts.escape_document(query)}{prompts.SEARCH_CLOSE}\n")
        information = prompts.render_information(items, self.lang)
        self.history += turn + information + "\n"
        self.record.environment(information if by_policy else turn + information)
        if self.searches >= agent.settings.max_turns:
            self.must_answer = True

    def shown_passages(self) -> set[str]:
        """Ids of every passage in the evidence of this trajectory's earlier searches."""
        return {h.passage.id for step in self.steps if isinstance(step, EvidenceStep) for e in step.items
                for h in e.members}

    def shown_items(self) -> int:
        return sum(len(step.items) for step in self.steps if isinstance(step, EvidenceStep))

    # -- the policy's turn
    def prompt(self) -> str:
        self.prefill = prompts.final_answer_nudge(self.lang, self.searches > 0) if self.must_answer else ""
        self.prompt_text = prompts.build_prompt(self.question, self.lang, self.history + self.prefill,
                                                few_shot=self.agent.settings.few_shot)
        self.record.open_turn(self.prefill or prompts.THINK_OPEN, self.prompt_text)
        return self.prompt_text

    def advance(self, gen: Generation, gen_s: float) -> None:
        self.record.policy(gen)
        if self.must_answer:
            # The prompt opened the answer turn: read it with its opening, whatever it holds.
            turn = prompts.parse_turn(self.prefill + gen.text + (gen.stop or ""))
            if turn.think and self.prefill.startswith(prompts.THINK_OPEN):
                self.emit(ThinkStep("think", duration_s=gen_s, text=turn.think, turn=self.turn + 1))
            answer = turn.answer if turn.answer is not None else _plain(prompts.TAG_RE.split(gen.text)[0])
            return self.finish(answer, forced=turn.answer is None or gen.finish_reason == "length")
        text = gen.text + (gen.stop or "")
        turn = prompts.parse_turn(text)
        self.malformed += not turn.well_formed
        if turn.think:
            self.emit(ThinkStep("think", duration_s=gen_s, text=turn.think, turn=self.turn + 1))
        if turn.search and self.agent.method == "crosearch":
            return self.search(turn.search, turn.think or "")
        if turn.answer:
            return self.finish(turn.answer, forced=not turn.well_formed and "unclosed <answer>" in turn.problem)
        # Malformed turn (no action): record it and insist on an answer next time.
        self.history += turn.render() + "\n" if turn.think else ""
        self.must_answer = True

    def finish(self, answer: str, forced: bool = False) -> None:
        self.answer = answer.strip()
        self.emit(AnswerStep("answer", text=self.answer, lang=self.lang, forced=forced))
        self.done = True

    def result(self) -> Result:
        return Result(self.question, self.lang, self.answer, self.steps, self.history, self.now(), self.malformed,
                      self.record)


def _unindexed(question: str, det, indexed, method: str):
    """When the question is, confidently, in a language that has no index (French against the
    XQuAD indexes), say so, search every index, and still answer in the question's language."""
    wide = detect(question, tuple(set(lang_names) | set(indexed)), method)
    if wide.fallback or wide.lang in indexed or wide.confidence < UNINDEXED_CONFIDENCE:
        return det
    return type(det)(wide.lang, wide.confidence, True,
                     f"there is no {lang_name(wide.lang)} index here; searching every language and answering in {lang_name(wide.lang)}")


UNINDEXED_CONFIDENCE = 0.9


def _answer_fits(tr: Trajectory, gen: Generation) -> bool:
    """Are the letters of the answer in this turn (if it has one) all of the scripts an
    answer in the question's language may use?"""
    scripts = answer_scripts(tr.lang)
    if scripts is None:
        return True
    answer = prompts.parse_turn(tr.prefill + gen.text + (gen.stop or "")).answer
    return answer is None or text_fits(answer, scripts)


def _plain(text: str) -> str:
    """Generated text with protocol tags stripped, for a forced answer."""
    return " ".join(prompts.TAG_RE.sub(" ", text).split())[:300]


# ---------------------------------------------------------------- the agent

@runtime_checkable
class RecordBackend(Protocol):
    """A backend that continues each trajectory from its record instead of from the rendered
    prompt (training's rollouts: token-exact, with log-probabilities). Other backends take
    prompts: `generate(prompts, sampling) -> list[Generation]`."""

    def continue_trajectories(self, trajectories: list[Trajectory], sampling: Sampling) -> list[Generation]: ...


class Agent:
    def __init__(self, policy, retriever: Searcher | None, settings, method: str = "crosearch"):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        self.policy, self.retriever, self.settings, self.method = policy, retriever, settings, method

    def _sampling(self) -> Sampling:
        s = self.settings
        stops = (prompts.STOP_ANSWER,) if self.method != "crosearch" else prompts.STOPS
        return Sampling(max_tokens=s.max_new_tokens, temperature=s.temperature, stop=stops, seed=s.seed)

    def _answer_sampling(self, tr: Trajectory, budget: int) -> Sampling:
        return dataclasses.replace(self._sampling(), max_tokens=budget, stop=(prompts.STOP_ANSWER,),
                                   scripts=answer_scripts(tr.lang), closing=prompts.STOP_ANSWER)

    def _generate(self, open_: list[Trajectory], prompts_: list[str]) -> list[Generation]:
        """One turn per prompt. With `answer_script`, an answer with letters of a script the
        question's language does not use (`token_scripts`) is decoded again, from the tokens
        of its scripts only. Greedy, that is what decoding every answer so would give (an
        answer that fits never met a token it bans), at the cost of more calls for the few
        that did not fit, not for every answer: decoding every answer apart took 1.22x the
        time per question (XQuAD test, 2-core CPU), this 1.08x (`benchmarks.agent`)."""
        gens = self.policy.generate(prompts_, self._sampling())
        if not self.settings.answer_script:
            return gens
        redo = [i for i, (tr, g) in enumerate(zip(open_, gens)) if not _answer_fits(tr, g)]
        for i, g in zip(redo, self._answer_apart([open_[i] for i in redo], [prompts_[i] for i in redo])):
            gens[i] = g
        return gens

    def _answer_apart(self, open_: list[Trajectory], prompts_: list[str]) -> list[Generation]:
        """The turns again, the answer decoded apart in the question language's scripts: the
        turn up to `<answer>`, then the answer, within the turn's token budget (a prompt that
        already opens the answer starts there)."""
        if not open_:
            return []
        sampling = self._sampling()
        up_to_answer = dataclasses.replace(sampling, stop=(*sampling.stop, prompts.ANSWER_OPEN))
        gens = self.policy.generate(prompts_, [
            self._answer_sampling(tr, sampling.max_tokens) if p.endswith(prompts.ANSWER_OPEN) else up_to_answer
            for tr, p in zip(open_, prompts_)])
        opened = [i for i, g in enumerate(gens) if g.stop == prompts.ANSWER_OPEN]
        todo = [i for i in opened if gens[i].tokens < sampling.max_tokens]
        answers = self.policy.generate([prompts_[i] + gens[i].text + prompts.ANSWER_OPEN for i in todo],
                                       [self._answer_sampling(open_[i], sampling.max_tokens - gens[i].tokens)
                                        for i in todo]) if todo else []
        done = dict(zip(todo, answers))
        for i in opened:
            g, a = gens[i], done.get(i, Generation("", "length"))  # no budget left for the answer
            gens[i] = Generation(g.text + prompts.ANSWER_OPEN + a.text, a.finish_reason, a.stop, g.tokens + a.tokens,
                                 g.token_ids + a.token_ids)
        return gens

    def _step_batch(self, open_: list[Trajectory]) -> None:
        """One policy turn for every open trajectory, in one backend call."""
        t = time.perf_counter()
        try:
            prompts_ = [tr.prompt() for tr in open_]
            if isinstance(self.policy, RecordBackend):
                gens = self.policy.continue_trajectories(open_, self._sampling())
            else:
                gens = self._generate(open_, prompts_)
        except PolicyError as err:
            if len(open_) > 1:  # one bad prompt (e.g. too long) must not fail the whole batch
                for tr in open_:
                    self._step_batch([tr])
                return
            for tr in open_:
                tr.fail(f"The language model failed: {err}", cause="backend")
            return
        except Exception as err:  # never a stack trace in the UI
            for tr in open_:
                tr.fail(f"The language model failed unexpectedly: {type(err).__name__}: {err}", cause="backend")
            return
        gen_s = time.perf_counter() - t
        for tr, gen in zip(open_, gens):
            tr.advance(gen, gen_s)

    def _limit(self) -> int:
        # Searches plus one answer turn, plus one malformed turn's grace.
        return self.settings.max_turns + 2

    def run(self, question: str, lang: str | None = None):
        """Yield the steps of one question as they happen (the last one is an answer or an error)."""
        yield from self._run(Trajectory(self, question, lang))

    def answer(self, question: str, lang: str | None = None) -> Result:
        """One question, start to end, as one result."""
        tr = Trajectory(self, question, lang)
        for _ in self._run(tr):
            pass
        return tr.result()

    def _run(self, tr: Trajectory):
        seen = 0

        def fresh():
            nonlocal seen
            new, seen = tr.steps[seen:], len(tr.steps)
            return new

        tr.start()
        yield from fresh()
        for _ in range(self._limit()):
            if tr.done:
                break
            self._step_batch([tr])
            yield from fresh()
        if not tr.done:
            tr.finish("", forced=True)
            yield from fresh()

    def run_batch(self, questions: list[str], langs: list[str] | None = None, progress=None) -> list[Result]:
        """Answer many questions, every turn batched through the backend."""
        trs = [Trajectory(self, q, (langs or [None] * len(questions))[i]) for i, q in enumerate(questions)]
        for tr in trs:
            tr.start()
        for _ in range(self._limit()):
            open_ = [tr for tr in trs if not tr.done]
            if not open_:
                break
            self._step_batch(open_)
            if progress:
                progress(sum(tr.done for tr in trs), len(trs))
        for tr in trs:
            if not tr.done:
                tr.finish("", forced=True)
        return [tr.result() for tr in trs]


def missing_note(missing: dict[str, str]) -> str:
    """The languages a search could not reach, by why: "Not searched (service unreachable):
    Arabic, Hindi, Thai." ("" when none)."""
    by_reason: dict[str, list[str]] = {}
    for lang, reason in missing.items():
        by_reason.setdefault(reason, []).append(lang_name(lang))
    return " ".join(f"Not searched ({reason}): {', '.join(names)}." for reason, names in by_reason.items())


def describe(step: Step) -> str:
    """One line per step, for terminals and logs."""
    if isinstance(step, LanguageStep):
        extra = f" — {step.reason}" if step.fallback else ""
        return f"[language] {lang_name(step.lang)} ({step.lang}, {step.confidence:.0%}){extra}"
    if isinstance(step, ThinkStep):
        return f"[think] {step.text}"
    if isinstance(step, SearchStep):
        return f"[search {step.turn}, {step.scope}] {step.query!r} in {', '.join(step.languages)}"
    if isinstance(step, EvidenceStep):
        lines = [f"[evidence] {len(step.items)} items from {', '.join(step.languages) or 'no language'} ({step.duration_s * 1000:.0f} ms)"]
        for item in step.items:  # the version the policy read first
            hits = item.read_first(step.read_lang)
            read = hits[0].passage
            lines.append(f"   {item.rank}. [{'+'.join(h.passage.lang for h in hits)}] {read.title}: {read.text[:100]}…")
        if step.missing:
            lines.append(f"   {missing_note(step.missing)}")
        return "\n".join(lines)
    if isinstance(step, AnswerStep):
        return f"[answer{' (forced)' if step.forced else ''}] {step.text}"
    if isinstance(step, ErrorStep):
        return f"[error] {step.message}"
    return f"[{step.kind}]"
