"""`training.ship`: a run's LoRA adapter goes under `policies/` with a model card and sha256
sums, names no machine folder, and is refused when it is over the repository's size limit."""
import json

import pytest

from crosearch_agent.bundled import SUMS
from crosearch_agent.store import sha256_file
from training.config import load_config
from training.ship import MAX_BYTES, main, model_card, read_tydiqa, ship


def _run_adapter(cfg, size=1000, **info):
    adapter = cfg.run_dir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * size)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 32, "base_model_name_or_path": str(cfg.run_dir)}))
    (adapter / "training.json").write_text(json.dumps({"steps": 40, "rows_trained": 320, "train_seconds": 1000.0,
                                                       "base_policy": str(cfg.run_dir / "base"), **info}))
    return adapter


def test_the_shipped_folder_has_its_card_sums_and_no_machine_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    cfg = load_config("cpu-reader")
    _run_adapter(cfg, started_from={"adapter": "<repo>/policies/old", "steps": 10, "rows_trained": 80,
                                    "train_seconds": 400.0, "commit": "abc"})
    dest = ship(cfg, "cpu-reader", root=tmp_path / "policies", name="reader")
    card = (dest / "README.md").read_text()
    assert "Continued from the adapter `<repo>/policies/old` after its 10 steps" in card
    assert "400 s of the training time above; this run 600 s" in card
    assert "--sft-start-adapter policies/old" in card
    for f in ("adapter_config.json", "training.json"):
        assert str(tmp_path) not in (dest / f).read_text()
    sums = dict(line.split()[::-1] for line in (dest / SUMS).read_text().splitlines())
    assert sums == {f: sha256_file(dest / f) for f in ("adapter_model.safetensors", "adapter_config.json",
                                                       "training.json", "README.md")}


def test_a_continued_runs_card_says_what_the_run_it_continued_read():
    def card(data):
        start = {"adapter": "<repo>/policies/old", "steps": 30, "rows_trained": 240, "commit": "abc", "data": data}
        return model_card("reader", {"train_seconds": 10.0, "rows_trained": 560, "started_from": start}, "x", None)

    assert "(240 rows drawn from 405 rows built from 1000 questions, XQuAD only;" in card(
        {"examples": 1000, "rows": 405, "tydiqa_share": 0.0})
    assert "drawn from 7429 rows built from 14376 questions, TyDi GoldP included" in card(
        {"examples": 14376, "rows": 7429, "tydiqa_share": 0.5})
    assert "(240 rows drawn from 405 rows built from 1000 questions;" in card({"examples": 1000, "rows": 405})  # no share kept
    assert "(240 rows; trained at abc)" in card(None)  # a record from before runs kept their data


def test_an_adapter_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    cfg = load_config("cpu-reader")
    _run_adapter(cfg, size=MAX_BYTES + 1)
    with pytest.raises(ValueError, match="ships at most 48 MB"):
        ship(cfg, "cpu-reader", root=tmp_path / "policies", name="reader")
    assert not (tmp_path / "policies" / "reader").exists()


def test_a_card_from_scratch_says_nothing_of_a_start():
    card = model_card("reader", {"train_seconds": 10.0, "rows_trained": 8}, "cpu-reader", None)
    assert "Continued from" not in card and "1.2 s per row" in card


def test_a_card_names_the_adapted_layers():
    info = {"train_seconds": 600.0, "rows_trained": 14880}
    top = model_card("reader", {**info, "lora": {"r": 32, "alpha": 64, "layers": 9}}, "cpu-reader", None)
    every = model_card("reader", {**info, "lora": {"r": 32, "alpha": 64, "layers": 0}}, "gpu-reader", None)
    assert "the top 9 decoder layers" in top
    assert "every decoder layer" in every and "top 0" not in every
    assert "0.04 s per row" in every  # a GPU's fraction of a second is not rounded to 0.0


def test_the_command_line_parses(capsys):
    # Its own flags must not clash with the training config's (--name is the run's name).
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--policy-name" in capsys.readouterr().out


def test_a_grpo_runs_card_tells_the_warmup_it_continued_and_what_grpo_did():
    warmup = {"run": "gpu-reader", "steps": 930, "rows_trained": 14880, "train_seconds": 610.0, "device": "cuda",
              "lora": {"r": 32, "alpha": 64, "layers": 0}, "data": {"rows": 7429}, "commit": "abc"}
    grpo = {"kind": "grpo", "steps": 16, "train_seconds": 2160.0, "device": "cpu", "commit": "def",
            "agent": {"k": 2}, "first_step": {"reward": 0.7}, "last_step": {"reward": 0.83333},
            "config": {"questions_per_step": 2, "num_generations": 6, "multilingual": True, "group_languages": 3,
                       "learning_rate": 5e-5, "beta": 0.02, "reward_weights": {"answer": 1.0}},
            "started_from": {"adapter": "<repo>/policies/crosearch-reader-270m", "training": warmup}}
    card = model_card("reader", grpo, "cpu-grpo", None)
    assert "7429 rows; 14880 rows trained (930 optimizer steps)" in card and "every decoder layer" in card
    assert ("GRPO (`training/grpo.py`) trained the warm-up's adapter further: 16 steps of 2 questions x 6 rollouts "
            "(groups over 3 languages of one question), learning rate 5e-05") in card
    assert "reward 0.700 at the first step, 0.833 at the last; 2160 s on cpu" in card and '`{"k": 2}`' in card
    assert ("`python -m training.sft --config gpu-reader`, then `python -m training.grpo --config cpu-grpo "
            "--start-adapter <data home>/training/gpu-reader/adapter` (that warm-up's adapter) and "
            "`python -m training.ship --config cpu-grpo`") in card
    assert "Commit of the code that trained it: def" in card


def test_a_card_of_grpo_run_on_another_grpo_runs_adapter_tells_both_and_how_to_chain_them():
    warmup = {"run": "gpu-reader", "steps": 930, "rows_trained": 14880, "train_seconds": 610.0, "device": "cuda",
              "lora": {"r": 32, "alpha": 64, "layers": 0}, "data": {"rows": 7429}}
    config = {"questions_per_step": 2, "num_generations": 6, "multilingual": True, "group_languages": 3}
    first = {"kind": "grpo", "run": "cpu-grpo", "steps": 16, "config": {**config, "seed": 0},
             "started_from": {"adapter": "<data home>/training/gpu-reader/adapter", "training": warmup}}
    second = {"kind": "grpo", "run": "cpu-grpo-2", "steps": 40, "config": {**config, "seed": 1}, "commit": "ghi",
              "agent": {"k": 2}, "started_from": {"adapter": "<repo>/policies/crosearch-reader-270m", "training": first}}
    card = model_card("reader", second, "cpu-grpo", None)
    assert "7429 rows; 14880 rows trained (930 optimizer steps)" in card
    assert "trained the warm-up's adapter further: 16 steps" in card and "trained that adapter further: 40 steps" in card
    assert ("`python -m training.sft --config gpu-reader`, then `python -m training.grpo --config cpu-grpo --name cpu-grpo "
            "--steps 16 --seed 0 --start-adapter <data home>/training/gpu-reader/adapter`, then `python -m training.grpo "
            "--config cpu-grpo --name cpu-grpo-2 --steps 40 --seed 1 --start-adapter <data home>/training/cpu-grpo/adapter` "
            "(each from the adapter of the run before) and `python -m training.ship --config cpu-grpo --name cpu-grpo-2`") in card
    assert "Commit of the code that trained it: ghi" in card


def test_a_float32_adapter_over_the_limit_ships_in_bf16_over_its_bundled_base(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    import training.ship

    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    cfg = load_config("cpu-qwen-reader")
    adapter = _run_adapter(cfg)
    weights = {"a.lora_A.weight": torch.randn(16, 64), "a.lora_B.weight": torch.randn(64, 16)}
    save_file(weights, str(adapter / "adapter_model.safetensors"))
    monkeypatch.setattr(training.ship, "MAX_BYTES", (adapter / "adapter_model.safetensors").stat().st_size - 1)
    dest = ship(cfg, "cpu-qwen-reader", root=tmp_path / "policies", name="reader")
    shipped = load_file(str(dest / "adapter_model.safetensors"))
    assert {k: t.dtype for k, t in shipped.items()} == {k: torch.bfloat16 for k in weights}
    assert all(torch.equal(shipped[k], w.to(torch.bfloat16)) for k, w in weights.items())
    assert json.loads((dest / "adapter_config.json").read_text())["base_model_name_or_path"] == "bundled:qwen2.5-coder-1.5b"


def test_a_card_over_the_qwen_base_says_how_it_is_served_and_what_it_read():
    info = {"kind": "warmup", "train_seconds": 2400.0, "rows_trained": 240, "data": {"examples": 1000}}
    card = model_card("qwen-reader", info, "cpu-qwen-reader", None, "bundled:qwen2.5-coder-1.5b", tydiqa=False)
    assert "--policy shipped:qwen-reader" in card and "Qwen2.5-Coder-1.5B-Instruct" in card
    assert "Gemma" not in card and "TyDi" not in card and "serves by default" not in card
    assert "training.ship --config cpu-qwen-reader --policy-name qwen-reader" in card


def test_the_card_says_tydi_was_read_only_when_the_warmup_behind_the_adapter_read_it():
    xquad_only = {"kind": "warmup", "data": {"rows": 3811, "tydiqa_share": 0.0}}
    with_tydi = {"kind": "warmup", "data": {"rows": 7429, "tydiqa_share": 0.3}}
    grpo_on = lambda warmup: {"kind": "grpo", "started_from": {"training": warmup}}
    cfg_with_tydi = load_config("gpu-reader")
    assert cfg_with_tydi.tydiqa_share > 0  # the record wins over the config
    assert not read_tydiqa(xquad_only, cfg_with_tydi) and not read_tydiqa(grpo_on(xquad_only), cfg_with_tydi)
    assert read_tydiqa(with_tydi, load_config("cpu-qwen-reader")) and read_tydiqa(grpo_on(with_tydi), cfg_with_tydi)
    # a record from before warm-ups wrote it: the warm-up's config, or for GRPO "read it"
    assert not read_tydiqa({"kind": "warmup", "data": {}}, load_config("cpu-qwen-reader"))
    assert read_tydiqa(grpo_on({"kind": "warmup"}), load_config("cpu-grpo"))
