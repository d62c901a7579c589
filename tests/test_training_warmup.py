"""The warm-up's training step: the loss on the labelled (teacher) tokens only, computed
through the plain LM head on those positions, equal to the model's own loss; a LoRA adapter
on the top layers trains those layers alone. A tiny random Gemma 3 checks the arithmetic,
not the model."""
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
