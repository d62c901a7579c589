"""Token accounting of training rollouts: policy tokens have env_mask 1, everything the
environment inserts (forced first search, `<information>`, answer openings) has 0, and the
token stream is exactly what the agent's prompts say. Fast tests script the policy's turns
over a fixed evidence list; the slow test runs the real bundled policy on the real indexes."""
import pytest

from crosearch_agent import prompts
from crosearch_agent.agent import Agent
from crosearch_agent.config import Settings
from tests.conftest import FixedEvidence, Scripted, check_rollout_tokens, mask_runs
from training.rollout import ENV, POLICY, run_rollouts
from training.sft import TeacherTurns, find_gold, sft_rows


@pytest.fixture(scope="module")
def tokenizer(bundled_tokenizer):
    return bundled_tokenizer


def _agent(**kw):
    return Agent(None, FixedEvidence(), Settings(few_shot=0, max_turns=2, force_global_search=False, **kw))


def test_policy_tokens_are_masked_in_and_everything_inserted_is_masked_out(tokenizer):
    turns = ["Nothing in German.</think>\n<search>Super Bowl 50 winner</search>",
             "Doc 2 says: Denver Broncos.</think>\n<answer>Denver Broncos</answer>"]
    rec = Scripted(tokenizer, turns)
    [r] = run_rollouts(_agent(), rec, ["Wer gewann den Super Bowl 50?"], ["de"])
    s = r.stream
    assert len(s.completion_ids) == len(s.env_mask) == len(s.logprobs)
    runs = mask_runs(s.env_mask, s.completion_ids)
    assert [m for m, _ in runs] == [ENV, POLICY, ENV, POLICY]
    # the policy's runs are exactly its turns' tokens
    assert [ids for m, ids in runs if m == POLICY] == [tokenizer(t, add_special_tokens=False)["input_ids"] for t in turns]
    env = [tokenizer.decode(ids) for m, ids in runs if m == ENV]
    assert env[0].startswith("I need to search for this.</think>\n<search>") and "<information>" in env[0]
    assert env[1].startswith("\n<information>") and "Doc 1 [German (de)]" in env[1]
    for m, ids in runs:  # retrieved text, injection attempt included, is never a policy token
        if m == POLICY:
            assert "<information>" not in tokenizer.decode(ids) and "HACKED" not in tokenizer.decode(ids)
    assert "HACKED" in env[1] and "‹/information›" in env[1]  # escaped, inside the environment's text
    assert r.answer == "Denver Broncos" and r.answered and (r.searches, r.global_searches) == (2, 1)
    assert s.prompt_ids == tokenizer(s.prompt_text)["input_ids"]


def test_each_turn_is_generated_from_exactly_the_agent_prompt(tokenizer):
    """With canonical policy turns, the token stream decodes to the agent's own prompt at
    every turn: training and serving see the same text."""
    turns = ["Let me check.</think>\n<search>Super Bowl 50 winner</search>",
             "Doc 2 says: Denver Broncos.</think>\n<answer>Denver Broncos</answer>"]
    rec = Scripted(tokenizer, turns)
    [r] = run_rollouts(_agent(), rec, ["Wer gewann den Super Bowl 50?"], ["de"])
    s = r.stream
    boundaries, seen = [], 0
    for m, ids in mask_runs(s.env_mask, s.completion_ids):
        seen += len(ids)
        if m == ENV:
            boundaries.append(seen)
    assert len(rec.prompts) == 2
    for [prompt], end in zip(rec.prompts, boundaries):
        assert tokenizer.decode(s.prompt_ids + s.completion_ids[:end], skip_special_tokens=True) == prompt


def test_a_malformed_turn_still_accounts_every_token(tokenizer):
    turns = ["I am not sure what to do here and keep talking", "Denver.</think>\n<answer>Denver</answer>"]
    rec = Scripted(tokenizer, turns)
    [r] = run_rollouts(_agent(), rec, ["Wer gewann den Super Bowl 50?"], ["de"])
    s = r.stream
    assert sum(s.env_mask) == sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in s.turns)
    assert len(s.turns) == 2 and s.turns[0] == turns[0]


def test_batches_keep_each_rollout_with_its_question(tokenizer):
    rec = Scripted(tokenizer, ["x.</think>\n<answer>A</answer>"])
    qs = ["Wer gewann den Super Bowl 50?", "Who won Super Bowl 50?", "谁赢得了第50届超级碗？"]
    rollouts = run_rollouts(_agent(), rec, qs, ["de", "en", "zh"])
    assert [(r.stream.question, r.lang) for r in rollouts] == list(zip(qs, ["de", "en", "zh"]))
    assert all(r.answer == "A" for r in rollouts)


def test_a_failing_backend_stops_the_rollouts_but_a_refused_question_does_not(tokenizer):
    from crosearch_agent.policy import PolicyError
    from training.rollout import RolloutError

    class Down(Scripted):
        def policy_turns(self, trajectories, streams, sampling):
            raise PolicyError("server down")

    with pytest.raises(RolloutError, match="server down"):
        run_rollouts(_agent(), Down(tokenizer, []), ["Wer gewann den Super Bowl 50?"], ["de"])
    rec = Scripted(tokenizer, ["x.</think>\n<answer>A</answer>"])
    rollouts = run_rollouts(_agent(), rec, ["", "Who won Super Bowl 50?"], ["en", "en"])
    assert [r.answer for r in rollouts][-1] == "A"


# ---------------------------------------------------------------- the warm-up teacher

def test_the_teacher_answers_from_evidence_or_searches_globally(tokenizer, shared_data):
    from training.data import Example, Variant

    golds = {"de": ("Denver Broncos",), "en": ("Denver Broncos",), "zh": ("丹佛野马队",)}
    ex = Example("xquad/q/zh", "xquad/q", "xquad", "c", "zh", "Super_Bowl_50", 0,
                 {l: Variant(l, q, golds[l]) for l, q in
                  [("de", "Wer gewann den Super Bowl 50?"), ("en", "Who won Super Bowl 50?"), ("zh", "谁赢得了第50届超级碗？")]})
    # The local (Chinese) search finds the Chinese passage, which holds the gold: answer at once.
    teacher = TeacherTurns(tokenizer, {(ex.variant("zh").question, "zh"): (ex, "zh")})
    [r] = run_rollouts(_agent(), teacher, [ex.variant("zh").question], ["zh"])
    assert r.searches == 1 and r.answer == "丹佛野马队" and teacher.supported[(ex.variant("zh").question, "zh")]
    assert r.stream.turns[0].startswith("Doc 1 says: 丹佛野马队.")
    [row] = sft_rows([r.stream], 4096)
    labelled = tokenizer.decode([t for t in row["labels"] if t != -100])
    assert labelled == r.stream.turns[0] and "<information>" not in labelled
    assert len(row["labels"]) == len(row["input_ids"])
    # With both searches forced and no repeats, the local search's gold is not shown again by
    # the global one: the teacher still answers from it.
    only_zh = Example("xquad/q/zh", "xquad/q", "xquad", "c", "zh", "Super_Bowl_50", 0,
                      {"zh": ex.variant("zh"), "de": Variant("de", "Wer?", ("nicht da",))})
    agent = Agent(None, FixedEvidence(), Settings(few_shot=0, max_turns=2, force_global_search=True,
                                                  repeat_evidence=False))
    teacher = TeacherTurns(tokenizer, {(ex.variant("zh").question, "zh"): (only_zh, "zh")})
    [r] = run_rollouts(agent, teacher, [ex.variant("zh").question], ["zh"])
    assert r.searches == 2 and teacher.supported[(ex.variant("zh").question, "zh")]
    assert r.stream.turns[0].startswith("Doc 1 says: 丹佛野马队.") and r.answer == "丹佛野马队"


def test_the_warm_up_drops_trajectories_whose_turns_outgrow_the_serving_budget(tokenizer):
    from training.sft import answer_turn, policy_turn_lengths

    # A cross-lingual teacher turn fits 48 tokens (the old wording, 51 tokens, never closed).
    turn = answer_turn(2, "de", "Denver Broncos", "th", "เดนเวอร์ บรองโกส์")
    assert len(tokenizer(turn, add_special_tokens=False)["input_ids"]) <= 48
    assert policy_turn_lengths([ENV, POLICY, POLICY, ENV, ENV, POLICY]) == [2, 1]
    rec = Scripted(tokenizer, ["Doc 1 says: " + "very " * 40 + "long.</think>\n<answer>A</answer>"])
    [r] = run_rollouts(_agent(), rec, ["Who won Super Bowl 50?"], ["en"])
    assert sft_rows([r.stream], 4096) and not sft_rows([r.stream], 4096, max_turn_tokens=32)


def test_find_gold_reads_each_document_in_its_own_language():
    items = FixedEvidence().search("q", ["de", "en", "zh"])
    golds = {"zh": ["丹佛野马队"], "en": ["Carolina Panthers 24-10"], "de": ["nicht da"]}
    assert find_gold(items, "zh", golds) == (2, "en", "Carolina Panthers 24-10")
    assert find_gold(items, "zh", {"de": ["x"]}) is None


# ---------------------------------------------------------------- the real policy

@pytest.mark.slow
def test_a_real_rollout_of_the_bundled_policy_masks_retrieved_tokens(tokenizer, shared_data):
    import torch
    from transformers import AutoModelForCausalLM

    from crosearch_agent.bundled import materialise_policy
    from crosearch_agent.retriever import load_retriever
    from crosearch_agent.store import StoreError
    from training.data import TrainOnlyRetriever, load_examples
    from training.config import load_config
    from training.rollout import ModelTurns

    settings = Settings(few_shot=0, k=2, max_turns=2, max_new_tokens=24, temperature=1.0, force_global_search=False)
    try:
        retriever = TrainOnlyRetriever(load_retriever(settings))
    except StoreError as err:
        pytest.skip(f"no xquad-partial index ({err}); build it with python -m indexes.build")
    model = AutoModelForCausalLM.from_pretrained(materialise_policy(), dtype=torch.float32)
    rec = ModelTurns(model, tokenizer, seed=1)
    examples = load_examples(load_config(None, {"seed": 1}), n=2)
    rollouts = run_rollouts(Agent(None, retriever, settings), rec, [e.variant().question for e in examples],
                            [e.lang for e in examples])
    for r in rollouts:
        s = r.stream
        check_rollout_tokens(r, tokenizer, settings.max_new_tokens)
        assert all(lp <= 0.0 for lp in s.logprobs) and any(lp < 0.0 for lp in s.logprobs)
        assert all(lp == 0.0 for lp, m in zip(s.logprobs, s.env_mask) if m == ENV)


# ---------------------------------------------------------------- TRL's rollout_func

def test_rollout_func_spreads_each_group_over_its_languages_with_their_own_gold(tokenizer):
    """TRL hands the function each prompt repeated num_generations times in a row; a rollout's
    place in its group picks its language, on every process."""
    from types import SimpleNamespace

    from training.config import load_config
    from training.data import Example, Variant
    from training.rollout import RolloutStats, make_rollout_func

    golds = {"de": ("Denver Broncos",), "en": ("Denver Broncos",), "zh": ("丹佛野马队",)}
    questions = {"de": "Wer gewann den Super Bowl 50?", "en": "Who won Super Bowl 50?", "zh": "谁赢得了第50届超级碗？"}
    variants = {l: Variant(l, questions[l], golds[l]) for l in questions}
    rows = {f"xquad/q/{l}": Example(f"xquad/q/{l}", "xquad/q", "xquad", "c", l, "T", 0, variants) for l in ("zh", "de")}
    cfg = load_config(None, {"num_generations": 4, "group_languages": 2})
    stats = RolloutStats()
    rec = Scripted(tokenizer, ["x.</think>\n<answer>丹佛野马队</answer>"])
    func = make_rollout_func(rows, cfg, lambda collection: _agent(), lambda trainer: rec, stats)
    trainer = SimpleNamespace(accelerator=SimpleNamespace(process_index=0))
    out = func(["xquad/q/zh"] * 4 + ["xquad/q/de"] * 4, trainer)
    assert out["lang"] == ["zh", "en", "zh", "en", "de", "en", "de", "en"]
    assert all(f"Question: {questions[l]}\n" in tokenizer.decode(ids) for l, ids in zip(out["lang"], out["prompt_ids"]))
    assert out["golds"] == [list(golds[l]) for l in out["lang"]]
    assert out["golds_by_lang"] == [{l: list(g) for l, g in golds.items()}] * 8  # for the language reward
    assert out["answer"] == ["丹佛野马队"] * 8 and len(out["env_mask"]) == len(out["completion_ids"]) == 8
    assert all(len(m) == len(c) for m, c in zip(out["env_mask"], out["completion_ids"]))
    assert stats.take()["rollouts"] == 8
    # The second of two processes holds the second half of a group: it continues the order.
    second = func(["xquad/q/zh"] * 2, SimpleNamespace(accelerator=SimpleNamespace(process_index=1)))
    assert second["lang"] == ["zh", "en"]
    # The ablation: one language per group.
    single = make_rollout_func(rows, load_config(None, {"num_generations": 4, "multilingual": False}),
                               lambda collection: _agent(), lambda trainer: rec)
    assert single(["xquad/q/de"] * 4, trainer)["lang"] == ["de"] * 4
