"""The warm-up's training step: the loss on the labelled (teacher) tokens only, computed
through the plain LM head on those positions, equal to the model's own loss; a LoRA adapter
on the top layers trains those layers alone. A tiny random Gemma 3 checks the arithmetic,
not the model."""
import re

import pytest
import torch

from training.config import load_config
from training.head import IGNORE, labelled_loss
from training.model import load_trainable


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=500, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                                               head_dim=16, final_logit_softcapping=30.0))
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    return folder


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 500, (2, 40))
    labels = torch.full_like(ids, IGNORE)
    labels[0, 30:36] = ids[0, 30:36]  # a teacher turn at the end of the first row
    labels[1, 10:14] = ids[1, 10:14]  # and one in the middle of the second
    return ids, labels


def test_the_labelled_loss_is_the_models_own_loss_on_teacher_tokens(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    ids, labels = _batch()
    expected = model(input_ids=ids, labels=labels).loss
    assert torch.allclose(labelled_loss(model, ids, torch.ones_like(ids), labels), expected, atol=1e-5)
    # divided by the accumulated batch's token count when the trainer gives it
    assert torch.allclose(labelled_loss(model, ids, None, labels, num_items=20), expected * 10 / 20, atol=1e-5)


def test_lora_on_the_top_layers_trains_only_them(tiny):
    cfg = load_config("cpu-reader", {"lora_layers": 2, "lora_r": 4})
    model = load_trainable(str(tiny), cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and (".layers.2." in n or ".layers.3." in n) for n in trainable)
    ids, labels = _batch()
    labelled_loss(model, ids, None, labels).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    merged = model.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_the_row_cost_profile_times_forward_and_backward_of_the_configs_model(tiny):
    from training.sft import profile_rows

    cfg = load_config("cpu-reader", {"base_policy": str(tiny), "lora_layers": 2, "lora_r": 4, "device": "cpu"})
    lines = []
    got = profile_rows(cfg, tokens=40, scored=6, repeats=2, log=lines.append)
    assert got["tokens"] == 40 and got["lora"] == {"r": 4, "layers": 2} and got["device"] == "cpu"
    assert got["seconds_per_row"] > 0 and got["first_pass_s"] > 0
    assert got["rows_per_hour"] == pytest.approx(3600 / got["seconds_per_row"], rel=0.01)
    assert "s per row of 40 tokens" in lines[0] and "LoRA r 4 on the top 2 layers" in lines[0]


def test_the_warmup_progress_line_tells_loss_speed_time_left_and_memory():
    from types import SimpleNamespace

    from training.sft import progress_callback

    lines = []
    progress = progress_callback(lines.append, rows_per_step=8, every=2)
    for step in (1, 2, 3, 4):
        state = SimpleNamespace(global_step=step, max_steps=10, log_history=[{"loss": 0.5, "step": step}])
        progress.on_step_end(None, state, None)
    assert len(lines) == 2 and lines[-1].startswith("warm-up step 4/10: loss 0.500, ")
    resident, peak = re.search(r"resident ([\d.]+) GB, peak ([\d.]+) GB", lines[-1]).groups()
    assert "s/row" in lines[-1] and "min left" in lines[-1] and 0 < float(resident) <= float(peak)


def test_the_profile_names_the_weights_a_config_trains():
    from training.sft import _trained_weights

    assert _trained_weights(load_config("cpu-reader")) == "LoRA r 32 on the top 9 layers"
    assert _trained_weights(load_config("gpu-reader")) == "LoRA r 32 on all layers"
    assert _trained_weights(load_config("cpu-reader", {"lora_r": 0})) == "full fine-tuning"


def test_a_warmup_continues_a_finished_adapter_after_its_steps(tiny_gemma, tmp_path):
    """`sft_start_adapter`: the trainer resumes from the adapter's weights at the step its
    training.json records and trains only the steps after it; the new run's record says what
    the adapter's run read."""
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig
    from datasets import Dataset

    from training.sft import _start_note, make_sft_trainer_class, save_adapter, start_from_adapter

    cfg = load_config("cpu-reader", {"base_policy": str(tiny_gemma), "lora_r": 4, "lora_layers": 1, "device": "cpu"})
    finished = load_trainable(str(tiny_gemma), cfg)
    torch.manual_seed(2)
    for name, p in finished.named_parameters():
        if "lora_B" in name:  # zero when fresh: a trained adapter's differ
            p.data.normal_()
    expected = {n: p.detach().clone() for n, p in finished.named_parameters() if "lora_" in n}
    data = {"examples": 3, "rows": 2, "tydiqa_share": 0.0}
    adapter = save_adapter(finished, tmp_path / "adapter", {"steps": 2, "rows_trained": 2, "train_seconds": 7.0,
                                                            "data": data})

    cfg = load_config("cpu-reader", {"base_policy": str(tiny_gemma), "lora_r": 4, "lora_layers": 1, "device": "cpu",
                                     "sft_start_adapter": str(adapter)})
    work = tmp_path / "work"
    args = SFTConfig(output_dir=str(work), max_steps=4, per_device_train_batch_size=1, learning_rate=0.0,
                     logging_steps=1, save_steps=2, report_to="none", use_cpu=True, disable_tqdm=True)
    lines = []
    checkpoint = start_from_adapter(cfg, work, args, log=lines.append)
    assert checkpoint.name == "checkpoint-2" and "after its 2 steps" in lines[0]
    assert _start_note(cfg)["data"] == data and _start_note(cfg)["steps"] == 2

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma)
    ids = tokenizer("Doc 1 says: 1263.")["input_ids"]
    rows = [{"input_ids": ids, "labels": ids} for _ in range(4)]
    steps_run = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps_run.append(state.global_step)

    trainer = make_sft_trainer_class()(model=load_trainable(str(tiny_gemma), cfg), args=args,
                                       train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.add_callback(Count())
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert steps_run == [3, 4]  # steps 1-2 are the adapter's
    # the run's own logging and checkpoint intervals, not the trainer's defaults
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [3, 4]
    assert (work / "checkpoint-4").is_dir()
    trained = dict(trainer.model.named_parameters())
    assert all(torch.equal(trained[n].detach(), p) for n, p in expected.items())  # lr 0: still the adapter's


def _trained_adapter(base, tmp_path):
    """(config, folder) of a saved LoRA adapter on the top layer whose lora_B weights are all
    0.5 (zero when fresh), as if trained for 2 steps."""
    from training.sft import save_adapter

    cfg = load_config("cpu-reader", {"base_policy": str(base), "lora_r": 4, "lora_layers": 1, "device": "cpu"})
    finished = load_trainable(str(base), cfg)
    for name, p in finished.named_parameters():
        if "lora_B" in name:
            p.data.fill_(0.5)
    return cfg, save_adapter(finished, tmp_path / "adapter", {"steps": 2})


def test_a_run_rerun_after_its_last_step_loads_that_checkpoint_and_trains_no_step_more(tiny_gemma, tmp_path):
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig
    from datasets import Dataset

    from training.checkpoints import seed_checkpoint, train_to_end
    from training.sft import make_sft_trainer_class

    cfg, adapter = _trained_adapter(tiny_gemma, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma)
    ids = tokenizer("Doc 1 says: 1263.")["input_ids"]
    steps_run = []

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps_run.append(state.global_step)

    def run(max_steps):
        args = SFTConfig(output_dir=str(tmp_path / "work"), max_steps=max_steps, per_device_train_batch_size=1,
                         learning_rate=1e-3, logging_steps=1, save_steps=2, report_to="none", use_cpu=True,
                         disable_tqdm=True)
        checkpoint = seed_checkpoint(tmp_path / "work", adapter, 2, args)
        trainer = make_sft_trainer_class()(model=load_trainable(str(tiny_gemma), cfg), args=args,
                                           train_dataset=Dataset.from_list([{"input_ids": ids, "labels": ids}] * 4),
                                           processing_class=tokenizer)
        trainer.add_callback(Count())
        return trainer, train_to_end(trainer, checkpoint, max_steps)

    trainer, seconds = run(2)
    assert steps_run == [] and seconds == 0.0 and trainer.state.global_step == 2
    loaded = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert loaded and all(torch.all(p == 0.5) for p in loaded)  # the checkpoint's weights, not a fresh adapter's
    trainer, seconds = run(3)
    assert steps_run == [3] and seconds > 0.0


def test_grpo_can_train_a_finished_adapter_further_from_its_weights(tiny_gemma, tmp_path):
    from training.grpo import start_policy

    _, adapter = _trained_adapter(tiny_gemma, tmp_path)
    grpo = load_config("cpu-grpo", {"base_policy": str(tiny_gemma), "start_adapter": str(adapter), "device": "cpu"})
    assert start_policy(grpo) == str(tiny_gemma)  # the adapter goes over the base, not over a merged copy
    model = load_trainable(start_policy(grpo), grpo, adapter)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(torch.all(p == 0.5) for n, p in trainable.items() if "lora_B" in n)
    with pytest.raises(ValueError, match="start_adapter trains an adapter over base_policy"):
        load_config("cpu-grpo", {"policy": "bundled:gemma-3-270m"})


def test_continuing_needs_an_adapter_with_recorded_steps(tiny_gemma, tmp_path):
    from training.sft import start_from_adapter

    cfg = load_config("cpu-reader", {"base_policy": str(tiny_gemma), "sft_start_adapter": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter"):
        (tmp_path / "training.json").write_text('{"steps": 3}')
        start_from_adapter(cfg, tmp_path / "work", None)
    (tmp_path / "training.json").write_text("{}")
    with pytest.raises(ValueError, match="no training steps"):
        start_from_adapter(cfg, tmp_path / "work", None)


def test_continuing_refuses_an_adapter_of_another_lora_shape(tiny_gemma, tmp_path):
    from training.sft import save_adapter, start_from_adapter

    top = load_config("cpu-reader", {"base_policy": str(tiny_gemma), "lora_r": 4, "lora_layers": 1, "device": "cpu"})
    adapter = save_adapter(load_trainable(str(tiny_gemma), top), tmp_path / "adapter", {"steps": 2, "run": "tiny"})
    every = load_config("cpu-reader", {"base_policy": str(tiny_gemma), "lora_r": 4, "lora_layers": 0, "device": "cpu",
                                       "sft_start_adapter": str(adapter)})
    with pytest.raises(ValueError, match="r 4, alpha 64 on 1 layers .its run's config: tiny.; this config trains "
                                         "r 4, alpha 64 on all layers"):
        start_from_adapter(every, tmp_path / "work", None)
    assert not (tmp_path / "work").exists()


def test_the_warmup_loss_curve_is_drawn_from_the_trainers_log(tmp_path):
    from training.logs import plot_warmup_loss

    history = [{"step": s, "loss": 2.0 / s, "learning_rate": 1e-4} for s in range(1, 31)] + [{"train_runtime": 9.0}]
    assert plot_warmup_loss(history, tmp_path / "loss.png", "a run") == 30
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_warmup_loss([{"train_runtime": 9.0}], tmp_path / "none.png") == 0
    assert not (tmp_path / "none.png").exists()


def test_a_runs_loss_is_summed_up_by_the_means_of_its_first_and_last_steps():
    from training.sft import loss_ends

    history = [{"step": s, "loss": float(s)} for s in range(1, 26)] + [{"train_runtime": 3.0}]
    assert loss_ends(history) == {"loss_first": 5.5, "loss_last": 20.5}
    assert loss_ends([{"step": 1, "loss": 0.5}]) == {"loss_first": 0.5, "loss_last": 0.5}
    assert loss_ends([]) == {"loss_first": None, "loss_last": None}


@pytest.mark.parametrize("native_bf16", [True, False])
def test_a_lora_runs_frozen_base_is_bf16_where_bf16_autocast_computes(tiny, monkeypatch, native_bf16):
    """Frozen float32 weights would be cast to bf16 in every forward pass and the copies kept for
    the backward pass; where autocast computes in bf16 the base is loaded so, the adapter stays
    float32 (its small updates), and full fine-tuning keeps float32 master weights."""
    import crosearch_agent.policy

    monkeypatch.setattr(crosearch_agent.policy, "cpu_has_native_bf16", lambda: native_bf16)
    cfg = load_config("cpu-reader", {"lora_layers": 2, "lora_r": 4, "device": "cpu"})
    model = load_trainable(str(tiny), cfg)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16 if native_bf16 else torch.float32}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    ids, labels = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16):
        loss = labelled_loss(model, ids, None, labels)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    full = load_trainable(str(tiny), load_config("cpu-reader", {"lora_r": 0, "device": "cpu"}))
    assert {p.dtype for p in full.parameters()} == {torch.float32}


@pytest.mark.slow
def test_a_lora_warmup_ends_in_its_adapter_merged_onto_the_base(tiny_gemma, shared_data, tmp_path, monkeypatch):
    """A LoRA warm-up saves its adapter, and its warm-up folder is that adapter merged onto the
    base as first use merges a shipped policy (the trainer's memory handed back first)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from crosearch_agent.config import Settings, data_home
    from crosearch_agent.eval import ensure_index
    from crosearch_agent.policy_folders import is_policy_dir
    from training.sft import adapter_notes, run_warmup

    ensure_index(Settings())  # the real data home's xquad-partial index (built once)
    indexes = data_home() / "indexes"
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "indexes").symlink_to(indexes, target_is_directory=True)
    cfg = load_config("cpu-reader", {"name": "lora-warmup", "base_policy": str(tiny_gemma), "lora_r": 4,
                                     "lora_layers": 1, "device": "cpu", "tydiqa_share": 0.0, "sft_examples": 24, "sft_steps": 1,
                                     "sft_grad_accum": 1, "sft_learning_rate": 0.05, "sft_save_steps": 1})
    lines = []
    warmup = run_warmup(cfg, log=lines.append)

    adapter = cfg.run_dir / "adapter"
    assert warmup == cfg.warmup_dir and is_policy_dir(warmup), lines
    assert adapter_notes(warmup) == adapter_notes(adapter) and adapter_notes(adapter)["steps"] == 1
    assert not (warmup / "README.md").exists()  # no generic card naming this machine's paths
    served = AutoModelForCausalLM.from_pretrained(warmup, dtype=torch.float32).state_dict()
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gemma, dtype=torch.float32),
                                         str(adapter)).merge_and_unload().to(torch.bfloat16).float().state_dict()
    assert served.keys() == expected.keys()
    assert all(torch.equal(served[k], expected[k]) for k in expected)
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma, dtype=torch.float32).state_dict()
    assert any(not torch.equal(served[k], base[k].bfloat16().float()) for k in base)  # the adapter was merged
