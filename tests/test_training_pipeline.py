"""Training runs: configs and overrides, atomic checkpoints and publishing, resuming; and (slow)
the cpu-smoke run end to end: warm-up, GRPO interrupted and resumed, the policy published,
then the agent answering with it through the vLLM engine."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crosearch_agent import policy_folders
from crosearch_agent.config import REPO_ROOT, data_home
from crosearch_agent.policy_folders import latest_checkpoint
from training import checkpoints
from training.config import CONFIG_DIR, config_from_command_line, load_config


# ---------------------------------------------------------------- configs

def test_every_config_loads_and_overrides_type_themselves():
    for path in CONFIG_DIR.glob("*.yaml"):
        if path.name.startswith("accelerate"):
            continue
        cfg = load_config(path.stem)
        assert cfg.name == path.stem and cfg.num_generations >= 2
    _, cfg = config_from_command_line(argparse.ArgumentParser(), [
        "--config", "cpu-smoke", "--steps", "7", "--multilingual", "false", "--policy", "some/dir",
        "--reward_weights.format", "0.5", "--agent.k", "4", "--agent.force-global-search", "true",
        "--languages", "de,zh", "ar"])
    assert (cfg.steps, cfg.multilingual, cfg.policy, cfg.languages) == (7, False, "some/dir", ["de", "zh", "ar"])
    assert cfg.reward_weights == {"answer": 1.0, "format": 0.5, "language": 0.2}
    # the agent block: flags override entries, the file's other entries stand
    assert (cfg.agent.k, cfg.agent.force_global_search, cfg.agent.max_new_tokens) == (4, True, 32)
    assert load_config("cpu-smoke").agent.force_global_search is False


def test_training_flags_have_help_and_bad_values_are_usage_errors(capsys):
    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit):
        config_from_command_line(parser, ["--help"])
    text = capsys.readouterr().out
    assert "--sft_steps SFT_STEPS" in text and "warm-up optimizer steps" in text
    assert "--agent.max-new-tokens" in text and "--agent.policy" not in text  # the run's own options say which policy
    for bad in (["--agent.k", "three"], ["--multilingual", "maybe"], ["--languages", "xx"], ["--stepz", "3"]):
        with pytest.raises(SystemExit):
            config_from_command_line(argparse.ArgumentParser(), bad)


@pytest.mark.parametrize("overrides, message", [({"stepz": 3}, "unknown training option"),
                                                ({"answer_metric": "bleu"}, "f1 or em"),
                                                ({"num_generations": 1}, "at least 2"),
                                                ({"reward_weights": {"style": 1}}, "unknown reward"),
                                                ({"steps": -3}, "steps must be at least 1, not -3"),
                                                ({"per_device_batch_size": 0}, "per_device_batch_size must be at least 1"),
                                                ({"sft_steps": -1}, "sft_steps must be >= 0"),
                                                ({"agent": {"k": 0}}, "agent.k must be at least 1"),
                                                ({"agent": {"policy": "x"}}, "unknown agent option")])
def test_bad_configs_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("cpu-smoke", overrides)
    with pytest.raises(ValueError, match="known: cpu-grpo, cpu-qwen-reader, cpu-reader, cpu-small, cpu-smoke, gpu-1x, gpu-8x, gpu-reader$"):
        load_config("no-such-config")


def test_run_paths_live_under_the_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path))
    cfg = load_config("cpu-smoke")
    assert cfg.warmup_dir == tmp_path / "checkpoints" / "cpu-smoke" / "warmup"
    assert cfg.policy_dir == tmp_path / "checkpoints" / "cpu-smoke" / "policy"
    assert cfg.run_dir == tmp_path / "training" / "cpu-smoke"


# ---------------------------------------------------------------- checkpoints

def _fake_policy(path: Path, marker: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"marker": marker}))
    (path / "model.safetensors").write_bytes(b"0")
    return path


def test_publishing_swaps_the_latest_link_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path))
    ckpts = tmp_path / "checkpoints"
    first = _fake_policy(ckpts / "a" / "policy", "a")
    second = _fake_policy(ckpts / "b" / "policy", "b")
    policy_folders.publish_latest(first, ckpts)
    assert latest_checkpoint() == first.resolve()
    policy_folders.publish_latest(second, ckpts)
    assert latest_checkpoint() == second.resolve()
    assert os.readlink(ckpts / "latest") == os.path.join("b", "policy")  # relative: the home can move
    assert sorted(p.name for p in ckpts.iterdir()) == ["a", "b", "latest"]  # no temporary link left
    (ckpts / "latest").unlink()
    (ckpts / "latest").mkdir()
    with pytest.raises(RuntimeError, match="real folder"):
        policy_folders.publish_latest(first, ckpts)


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "config.json").write_text("{}")
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / checkpoints.STAGING / "checkpoint-8").mkdir(parents=True)  # a save cut short
    assert checkpoints.resume_point(tmp_path) == tmp_path / "checkpoint-4"
    assert [s for s, _ in checkpoints.checkpoint_steps(tmp_path)] == [2, 4]
    assert checkpoints.resume_point(tmp_path / "nothing-here") is None


def test_save_policy_replaces_a_folder_in_one_step(tmp_path):
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from crosearch_agent.bundled import materialise_policy

    tok = AutoTokenizer.from_pretrained(materialise_policy())
    tiny = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                              num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                              head_dim=8))
    dest = tmp_path / "policy"
    _fake_policy(dest, "old")
    policy_folders.save_policy(tiny, tok, dest, {"kind": "test"}, source=materialise_policy())
    assert json.loads((dest / "training.json").read_text()) == {"kind": "test"}
    assert (dest / "GEMMA_TERMS.html").exists() and policy_folders.is_policy_dir(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no temporary or old folder left
    from safetensors import safe_open

    with safe_open(dest / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert Gemma3ForCausalLM.from_pretrained(dest).config.vocab_size == len(tok)


# ---------------------------------------------------------------- the whole pipeline (slow)

QUESTION = "Wer gewann den Super Bowl 50?"


def _wait_for(path: Path, proc, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(2)
    return path.exists()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_cpu_smoke_runs_end_to_end_resumes_and_the_published_policy_answers_through_vllm(tmp_path, shared_data):
    from crosearch_agent.config import Settings
    from crosearch_agent.eval import ensure_index

    ensure_index(Settings())  # the real data home's xquad-partial index (built once)
    home = tmp_path / "home"  # a temporary home, so a user's real `latest` is never touched
    home.mkdir()
    try:
        _smoke_run(home, tmp_path)
    finally:  # resumable checkpoints hold optimizer state (GBs): do not leave them in /tmp
        shutil.rmtree(home, ignore_errors=True)


def _smoke_run(home: Path, tmp_path: Path) -> None:
    from crosearch_agent.policy import vllm_available

    (home / "indexes").symlink_to(data_home() / "indexes", target_is_directory=True)
    env = {**os.environ, "CROSEARCH_HOME": str(home), "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "training.grpo", "--config", "cpu-smoke"]
    run_dir = home / "training" / "cpu-smoke"
    log_path = tmp_path / "grpo.log"

    # 1. From the base model: the warm-up runs first, then GRPO, killed after its first checkpoint.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            saved = _wait_for(run_dir / "checkpoint-1" / "trainer_state.json", proc, 1000)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert saved, log_path.read_text()[-3000:]
    assert policy_folders.is_policy_dir(home / "checkpoints" / "cpu-smoke" / "warmup")
    warmup = json.loads((home / "checkpoints" / "cpu-smoke" / "warmup" / "training.json").read_text())
    assert warmup["kind"] == "warmup" and warmup["data"]["rows"] > 0 and warmup["loss_last"] is not None
    assert warmup["data"]["tydiqa_share"] == 0.0  # what it read, for the model card (XQuAD only)
    assert latest_checkpoint(home) is None  # nothing published by an interrupted run

    # 2. --resume continues from step 1 to the end, and the publishing gate decides.
    done = subprocess.run(cmd + ["--resume", "--gate_questions", "1", "--gate_backend", "transformers"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=1000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resuming from" in done.stdout and "checkpoint-1" in done.stdout
    rows = list(__import__("csv").DictReader(open(run_dir / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    for r in rows:
        for col in ("reward", "reward_answer", "reward_format", "reward_language", "kl", "format_valid_rate",
                    "mean_searches", "cross_lingual_search_share", "step_s"):
            float(r[col])
        assert float(r["mean_searches"]) >= 1.0
    assert (run_dir / "curves.png").stat().st_size > 1000
    policy_dir = home / "checkpoints" / "cpu-smoke" / "policy"
    decision = json.loads((policy_dir / "gate.json").read_text())
    assert decision["candidate"]["n"] == decision["incumbent"]["n"] == 12  # one dev question per language, both
    assert any(line.startswith("published ") for line in done.stdout.splitlines()) == decision["publish"]
    assert latest_checkpoint(home) == (policy_dir.resolve() if decision["publish"] else None)
    if not decision["publish"]:  # a two-step smoke run rarely beats the shipped policy; publish it by hand
        assert "not published: worse than the policy it would replace" in done.stdout
        policy_folders.publish_latest(policy_dir, home / "checkpoints")
    info = json.loads((policy_dir / "training.json").read_text())
    assert info["kind"] == "grpo" and info["steps"] == 2
    print("\n" + (run_dir / "log.csv").read_text())  # seconds per step and peak RSS, for the record

    # 3. The agent answers with the published checkpoint (the default policy) through vLLM.
    if not vllm_available():
        pytest.skip("vLLM is not installed; the checkpoint was published")  # the finally above still cleans up
    ask = subprocess.run([sys.executable, "-m", "crosearch_agent.ask", QUESTION, "--backend", "vllm",
                          "--max-new-tokens", "32", "--few-shot", "0"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ask.returncode == 0, (ask.stdout + ask.stderr)[-3000:]
    assert "policy: your newest checkpoint (policy) (backend: vllm)" in ask.stdout
    assert "[search 1, local]" in ask.stdout and "\nanswer:" in ask.stdout
    # Served as it was trained: the run's agent options the command line did not set.
    assert "trained with: --k 2, --max-turns 2, --force-global-search False" in ask.stderr


def test_grpo_scores_only_policy_tokens_and_matches_trl_there(tmp_path, monkeypatch):
    """The loss's log-probabilities skip retrieved tokens (env_mask 0) and equal TRL's own
    (temperature included) on the policy's tokens (a tiny random Gemma 3: this checks the masking, not the model)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig
    from trl import GRPOConfig

    from crosearch_agent.bundled import materialise_policy
    from training.grpo import make_trainer_class

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tok = AutoTokenizer.from_pretrained(materialise_policy())
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                               head_dim=16))
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, num_generations=2, temperature=0.7,
                      per_device_train_batch_size=2, report_to="none", max_steps=1)
    trainer = make_trainer_class()(
        model=model, reward_funcs=[lambda prompts, completions, **_: [0.0] * len(prompts)], args=args,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}), processing_class=tok)
    ids = torch.randint(5, 1000, (2, 30))
    attention = torch.ones_like(ids)
    attention[1, :4] = 0  # left padding
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 3:8] = 0
    mask[1, 5:] = 0
    full, full_entropy, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, 12,
                                                                       compute_entropy=True)
    trainer.score_mask = mask
    part, entropy, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, 12, compute_entropy=True)
    assert torch.allclose(part[mask == 1], full[mask == 1], atol=1e-5)
    assert torch.allclose(entropy[mask == 1], full_entropy[mask == 1], atol=1e-4)
    assert not part[mask == 0].any() and not entropy[mask == 0].any()
    part.sum().backward()  # the loss's gradient reaches the model through the scored positions
    assert trainer.model.lm_head.weight.grad is not None
