"""The policy being trained, as training loads it: float32 weights (a LoRA run's frozen base in
bf16 where bf16 autocast computes), the embedding frozen when the config says so, and with
`lora_r` > 0 a peft LoRA model over the top decoder layers."""
from __future__ import annotations

from training.config import TrainConfig


def load_trainable(path: str, cfg: TrainConfig, adapter=None):
    """The policy to train, its trained weights in float32 (bf16 autocast computes; small updates
    are not lost to bf16 rounding; `frozen_dtype` says what the frozen base is loaded in), with
    its embedding frozen when the config says so; with `adapter` (a folder) that LoRA adapter,
    trainable, else with `lora_r` > 0 a new peft LoRA model over all linear layers of the top
    `lora_layers` decoder layers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=frozen_dtype(cfg, adapter))
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # tied: the LM head too
    if adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    if not cfg.lora_r:
        return model
    from peft import LoraConfig, get_peft_model

    n = model.config.num_hidden_layers
    top = list(range(n - cfg.lora_layers, n)) if 0 < cfg.lora_layers < n else None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, layers_to_transform=top,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def frozen_dtype(cfg: TrainConfig, adapter=None):
    """The dtype the base weights are loaded in: bfloat16 when they stay frozen under a LoRA
    adapter and bf16 autocast computes anyway (the matmuls read them in bf16 either way; peft
    keeps the adapter in float32), else float32. Float32 frozen weights cost a bf16 copy of
    every weight per forward pass, kept for the backward pass: for Qwen2.5-1.5B on a 2-core
    CPU, 3 GB more memory and about twice the seconds per row."""
    import torch

    from training.config import trainer_device_args

    lora = adapter is not None or cfg.lora_r > 0
    return torch.bfloat16 if lora and trainer_device_args(cfg).get("bf16", False) else torch.float32
