"""The agent loop, training rollouts and one GRPO step, end to end through real transformers
code, on a tiny random Gemma 3 (tests/conftest.py) over a fixed three-language retriever:
fast enough for every run of the fast suite. The model writes nonsense; what is checked is
the plumbing (order of steps, token accounting, a gradient step), not the answers."""
import math

from crosearch_agent import prompts
from crosearch_agent.agent import AnswerStep, Agent, ErrorStep, EvidenceStep, LanguageStep, SearchStep
from crosearch_agent.config import Settings
from tests.conftest import FixedEvidence, check_rollout_tokens
from training.rollout import ENV, POLICY, ModelTurns, run_rollouts

QUESTION = "Wer gewann den Super Bowl 50?"


def _settings(**kw):
    return Settings(**{"few_shot": 0, "k": 2, "max_turns": 2, "max_new_tokens": 12, **kw})


def test_the_agent_loop_runs_end_to_end_on_a_transformers_backend(tiny_gemma):
    from crosearch_agent.policy import TransformersPolicy

    agent = Agent(TransformersPolicy(str(tiny_gemma)), FixedEvidence(), _settings())
    result = agent.run_batch([QUESTION], ["de"])[0]
    kinds = [type(s) for s in result.steps]
    assert kinds[0] is LanguageStep and result.lang == "de"
    searches = result.searches
    assert searches[0].scope == "local" and searches[0].languages == ["de"]  # the question's language first
    assert searches[1].scope == "global" and set(searches[1].languages) == {"de", "en", "zh"}
    assert all(kinds[kinds.index(SearchStep, i) + 1] is EvidenceStep for i in range(len(kinds)) if kinds[i] is SearchStep)
    assert isinstance(result.steps[-1], AnswerStep) and not any(k is ErrorStep for k in kinds)
    assert result.trajectory.count(prompts.INFORMATION_OPEN) == len(searches)


def test_rollouts_of_a_real_model_mask_every_inserted_token(tiny_gemma, bundled_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma, dtype=torch.float32)
    settings = _settings(temperature=1.0, force_global_search=False)
    rollouts = run_rollouts(Agent(None, FixedEvidence(), settings), ModelTurns(model, bundled_tokenizer, seed=1),
                            [QUESTION, "Who won Super Bowl 50?"], ["de", "en"])
    for r in rollouts:
        s = r.stream
        check_rollout_tokens(r, bundled_tokenizer, settings.max_new_tokens)
        assert "HACKED" not in "".join(s.turns)  # the passage that speaks the protocol stays environment text
        assert all(lp < 0.0 for lp, m in zip(s.logprobs, s.env_mask) if m == POLICY)
        assert all(lp == 0.0 for lp, m in zip(s.logprobs, s.env_mask) if m == ENV)


def test_one_grpo_step_changes_the_policy_from_rollouts_over_three_languages(tiny_gemma, bundled_tokenizer,
                                                                              tmp_path, monkeypatch):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig

    from training.config import load_config
    from training.data import Example, Variant
    from training.grpo import env_mask_tensor, make_recorder_factory, make_trainer_class
    from training.rollout import RolloutStats, make_rollout_func

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    golds = {"de": ("Denver Broncos",), "en": ("Denver Broncos",), "zh": ("丹佛野马队",)}
    questions = {"de": QUESTION, "en": "Who won Super Bowl 50?", "zh": "谁赢得了第50届超级碗？"}
    variants = {l: Variant(l, questions[l], golds[l]) for l in questions}
    rows = {"xquad/q/de": Example("xquad/q/de", "xquad/q", "xquad", "c", "de", "T", 0, variants)}
    cfg = load_config(None, {"num_generations": 3, "group_languages": 3, "agent": {"max_new_tokens": 8, "temperature": 1.0}})
    settings = _settings(temperature=1.0, max_new_tokens=8, force_global_search=False)
    stats = RolloutStats()
    rollouts = make_rollout_func(rows, cfg, lambda collection: Agent(None, FixedEvidence(), settings),
                                 make_recorder_factory(cfg, bundled_tokenizer), stats)

    def rollout_func(prompts_, trainer):
        out = rollouts(prompts_, trainer)
        trainer.score_mask = env_mask_tensor(out["env_mask"], trainer.accelerator.device)
        return out

    seen = []

    def by_language(prompts, completions, lang, **_):  # a reward that differs within every group
        seen.extend(lang)
        return [{"de": 1.0, "en": 0.0, "zh": -1.0}[l] for l in lang]

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, max_steps=1, num_generations=3,
                      per_device_train_batch_size=3, gradient_accumulation_steps=1, learning_rate=1e-2, beta=0.0,
                      temperature=1.0, max_completion_length=8, report_to="none", logging_steps=1,
                      save_strategy="no", mask_truncated_completions=False)
    trainer = make_trainer_class()(
        model=model, reward_funcs=[by_language], args=args,
        train_dataset=Dataset.from_dict({"prompt": ["xquad/q/de"] * 3}), processing_class=bundled_tokenizer,
        rollout_func=rollout_func)
    result = trainer.train()
    assert trainer.state.global_step == 1 and math.isfinite(result.training_loss)
    assert sorted(seen) == ["de", "en", "zh"] and stats.take()["rollouts"] == 3  # one group, three languages
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed  # the policy tokens' advantages moved the weights
