"""Multi-turn rollouts for TRL, through the project's own agent loop, with exact token accounting.

Every trajectory of the agent keeps a `Record` (crosearch_agent.agent): the question's prompt,
then the environment's pieces (the forced first search, `<information>` blocks, each turn's
opening) and the policy's turns with the token ids it sampled. `stream_of` turns a record
into the token stream TRL trains on:

    prompt_ids = the question's prompt (instructions, examples, question, `<think>`)
    completion_ids, env_mask = environment (mask 0) | policy turn (mask 1) | environment | ...

The environment's text is tokenised piece by piece and masked; the policy's turns keep the
ids they were sampled as. A `TurnRecorder` is the agent's backend (a `RecordBackend`): each
turn it generates from `prompt_ids + completion_ids` so far, so the ids trained on are
exactly the ids sampled.

`ModelTurns` samples with the model being trained (transformers `generate`), `VLLMTurns`
with TRL's colocated vLLM engine (GPU); the format warm-up's scripted teacher subclasses the
recorder too (training/sft.py), so warm-up and GRPO see the same text and layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from crosearch_agent import prompts
from crosearch_agent.agent import POLICY as POLICY_PIECE, Record
from crosearch_agent.policy import Generation, cut_at_stop

POLICY, ENV = 1, 0


class RolloutError(RuntimeError):
    """The rollouts could not run (the policy backend failed)."""


@dataclass
class Stream:
    """One trajectory's tokens."""
    question: str
    lang: str
    prompt_text: str
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[str] = field(default_factory=list)                  # the policy's turns as generated

    def add(self, source: int, ids: list[int], logprobs: list[float] | None = None) -> None:
        self.completion_ids += ids
        self.env_mask += [source] * len(ids)
        self.logprobs += list(logprobs) if logprobs else [0.0] * len(ids)


def stream_of(record: Record, question: str, lang: str, tokenizer) -> Stream:
    """A trajectory's record as token ids (see the module docstring)."""
    stream = Stream(question, lang, record.prompt, tokenizer(record.prompt)["input_ids"])
    for piece in record.pieces:
        if piece.source == POLICY_PIECE:
            stream.add(POLICY, piece.token_ids, piece.logprobs)
            stream.turns.append(piece.text)
        else:
            stream.add(ENV, tokenizer(piece.text, add_special_tokens=False)["input_ids"])
    return stream


class TurnRecorder:
    """An agent backend that generates from the trajectories' token streams; subclasses
    produce the policy's turns (`policy_turns`)."""

    backend = "training"

    def __init__(self, tokenizer, name: str = "policy"):
        self.tokenizer, self.name = tokenizer, name

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def continue_trajectories(self, trajectories, sampling) -> list[Generation]:
        streams = [stream_of(tr.record, tr.question, tr.lang, self.tokenizer) for tr in trajectories]
        gens = []
        for ids, logprobs in self.policy_turns(trajectories, streams, sampling):
            text, stop = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), sampling.stop)
            ended = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
            finish = "stop" if stop or ended else "length"
            gens.append(Generation(text, finish, stop, len(ids), list(ids), list(logprobs or [])))
        return gens

    def policy_turns(self, trajectories, streams: list[Stream], sampling) -> list[tuple[list[int], list[float] | None]]:
        """(token ids, their sampling log-probabilities or None) of one policy turn per stream."""
        raise NotImplementedError


# ---------------------------------------------------------------- sampling with the trained model

class _LogprobRecorder:
    """A logits processor that keeps the log-probability of each sampled token.

    It sees the (unwarped) scores of step t and, at step t+1, the token chosen at step t, so
    it stores one row of log-softmax at a time instead of every step's logits.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature if temperature > 0 else 1.0
        self.prev = None
        self.out: list = []

    def __call__(self, input_ids, scores):
        import torch

        if self.prev is not None:
            self.out.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences):
        import torch

        if self.prev is not None:
            self.out.append(self.prev.gather(1, sequences[:, -1:]).squeeze(1))
            self.prev = None
        return torch.stack(self.out, dim=1) if self.out else torch.zeros(len(sequences), 0)


class ModelTurns(TurnRecorder):
    """Policy turns sampled with transformers `generate` from the token streams."""

    def __init__(self, model, tokenizer, seed: int = 0, autocast_bf16: bool = False):
        super().__init__(tokenizer, getattr(model, "name_or_path", "policy"))
        self.model, self.seed, self.autocast_bf16 = model, seed, autocast_bf16
        self.calls = 0

    def policy_turns(self, trajectories, streams, sampling):
        import contextlib

        import torch
        from transformers import LogitsProcessorList

        tok, model = self.tokenizer, self.model
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        rows = [s.prompt_ids + s.completion_ids for s in streams]
        width = max(len(r) for r in rows)
        device = next(model.parameters()).device
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: every row ends where generation starts
            input_ids[i, width - len(row):] = torch.tensor(row)
            attention[i, width - len(row):] = 1
        recorder = _LogprobRecorder(sampling.temperature)
        kwargs = dict(max_new_tokens=sampling.max_tokens, pad_token_id=pad, use_cache=True,
                      logits_processor=LogitsProcessorList([recorder]))
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        was_training = model.training
        model.eval()
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if self.autocast_bf16
                    else contextlib.nullcontext())
        try:
            with torch.no_grad(), autocast:
                torch.manual_seed(self.seed * 100_003 + self.calls)
                self.calls += 1
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
        finally:
            model.train(was_training)
        logps = recorder.finish(out).cpu()
        new = out[:, width:].cpu()
        results = []
        for i in range(len(rows)):
            ids = new[i].tolist()
            n = len(ids)
            while n > 0 and ids[n - 1] == pad:  # finished rows are padded to the batch's length
                n -= 1
            results.append((ids[:n], logps[i, :n].tolist()))
        return results


class VLLMTurns(TurnRecorder):
    """Policy turns sampled with TRL's colocated vLLM engine (GPU runs with use_vllm)."""

    def __init__(self, llm, tokenizer, seed: int = 0):
        super().__init__(tokenizer, "vllm")
        self.llm, self.seed, self.calls = llm, seed, 0

    def policy_turns(self, trajectories, streams, sampling):
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                stop=list(sampling.stop) or None, include_stop_str_in_output=True,
                                logprobs=0, seed=self.seed * 100_003 + self.calls)
        self.calls += 1
        outs = self.llm.generate([{"prompt_token_ids": s.prompt_ids + s.completion_ids} for s in streams],
                                 sampling_params=params, use_tqdm=False)
        results = []
        for out in outs:
            o = out.outputs[0]
            logps = [next(iter(d.values())).logprob if d else 0.0 for d in (o.logprobs or [])]
            results.append((list(o.token_ids), logps or [0.0] * len(o.token_ids)))
        return results


# ---------------------------------------------------------------- one batch of rollouts

@dataclass
class Rollout:
    stream: Stream
    lang: str
    answer: str
    answered: bool        # ended in a closed <answer> (not forced by the agent)
    searches: int
    global_searches: int  # searches beyond the question's own language
    error: str | None = None


def run_rollouts(agent, recorder: TurnRecorder, questions: list[str], langs: list[str]) -> list[Rollout]:
    """Run the agent over the questions with `recorder` as its backend; one rollout each."""
    agent.policy = recorder
    results = agent.run_batch(questions, langs)
    failed = [r.error for r in results if r.backend_failed]
    if failed:
        raise RolloutError(failed[0])
    out = []
    for result in results:
        record = result.record
        if not record.prompt:  # refused before the agent built a prompt (e.g. an empty question)
            record = Record(prompts.build_prompt(result.question, result.lang, "", few_shot=agent.settings.few_shot))
        stream = stream_of(record, result.question, result.lang, recorder.tokenizer)
        if not stream.completion_ids:  # TRL reads each completion's last token
            stream.add(ENV, [recorder.tokenizer.eos_token_id])
        answer_steps = [s for s in result.steps if s.kind == "answer"]
        answered = bool(answer_steps) and not answer_steps[-1].forced
        searches = result.searches
        out.append(Rollout(stream, result.lang, result.answer or "", answered, len(searches),
                           sum(s.scope != "local" for s in searches), result.error))
    return out


# ---------------------------------------------------------------- TRL's rollout_func

@dataclass
class RolloutStats:
    """What the rollouts since the last log did (read and cleared by the run's logger)."""
    rollouts: int = 0
    searches: int = 0
    global_searches: int = 0
    answered: int = 0
    format_valid: int = 0
    policy_tokens: int = 0
    env_tokens: int = 0
    seconds: float = 0.0

    def take(self) -> dict:
        n = max(self.rollouts, 1)
        out = {"rollouts": self.rollouts, "mean_searches": self.searches / n,
               "cross_lingual_search_share": self.global_searches / max(self.searches, 1),
               "answered_rate": self.answered / n, "format_valid_rate": self.format_valid / n,
               "policy_tokens": self.policy_tokens / n, "env_tokens": self.env_tokens / n,
               "rollout_s": self.seconds}
        self.__init__()
        return out


def make_rollout_func(examples: dict, cfg, agent_for, recorder_for, stats: RolloutStats | None = None):
    """TRL's `rollout_func(prompts, trainer)`.

    The dataset's prompt column holds example keys. TRL repeats each one `num_generations`
    times in a row (groups are contiguous and start at the batch's start on every process),
    so a rollout's place in its group, hence its language, follows from its position.
    Rollouts are run per collection, each collection's batch in one agent call.
    """
    import time

    from training import rewards
    from training.data import assign_languages

    def rollout_func(prompts_: list[str], trainer) -> dict:
        t0 = time.perf_counter()
        n = cfg.num_generations
        offset = trainer.accelerator.process_index * len(prompts_)
        items = []
        for i, key in enumerate(prompts_):
            example = examples[key]
            lang = assign_languages(example, n, cfg.group_languages, cfg.multilingual, cfg.seed)[(offset + i) % n]
            items.append((example, lang))
        recorder = recorder_for(trainer)
        rollouts: list = [None] * len(items)
        for collection in dict.fromkeys(e.collection for e, _ in items):
            idx = [i for i, (e, _) in enumerate(items) if e.collection == collection]
            done = run_rollouts(agent_for(collection), recorder,
                                [items[i][0].variant(items[i][1]).question for i in idx], [items[i][1] for i in idx])
            for i, r in zip(idx, done):
                rollouts[i] = r
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [], "answer": [], "golds": [],
               "golds_by_lang": [], "lang": [], "turns": [], "answered": [], "searches": [], "global_searches": []}
        for (example, lang), r in zip(items, rollouts):
            s = r.stream
            out["prompt_ids"].append(s.prompt_ids)
            out["completion_ids"].append(s.completion_ids)
            out["logprobs"].append(s.logprobs)
            out["env_mask"].append(s.env_mask)
            out["answer"].append(r.answer)
            out["golds"].append(list(example.variant(lang).answers))
            out["golds_by_lang"].append(example.golds_by_lang)
            out["lang"].append(lang)
            out["turns"].append(list(s.turns))
            out["answered"].append(r.answered)
            out["searches"].append(r.searches)
            out["global_searches"].append(r.global_searches)
            if stats is not None:
                stats.rollouts += 1
                stats.searches += r.searches
                stats.global_searches += r.global_searches
                stats.answered += r.answered
                stats.format_valid += rewards.format_score(s.turns, r.answered) == 1.0
                stats.policy_tokens += sum(s.env_mask)
                stats.env_tokens += len(s.env_mask) - sum(s.env_mask)
        if stats is not None:
            stats.seconds += time.perf_counter() - t0
        return out

    return rollout_func
