"""One training run's settings: a YAML file (`training/configs/NAME.yaml`) plus `--key value`
overrides from the command line, checked against one typed dataclass.

Every path a run writes is derived here from the data home, so the warm-up, GRPO and the
published policy always agree on where things are:

  <data home>/checkpoints/<name>/warmup     the format warm-up (python -m training.sft)
  <data home>/training/<name>/              GRPO's resumable checkpoints, log.csv, curves.png
  <data home>/checkpoints/<name>/policy     the trained policy
  <data home>/checkpoints/latest            -> the newest published policy (what the app serves)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from crosearch_agent.config import REPO_ROOT, data_home
from crosearch_agent.policy_folders import BUNDLED_POLICY
from crosearch_agent.languages import XQUAD_LANGS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    name: str = "run"
    # -- policies
    base_policy: str = BUNDLED_POLICY           # what the warm-up starts from
    policy: str | None = None                    # GRPO's start; None: this run's warm-up (made first when missing)
    warmup: bool = True                          # run the format warm-up before GRPO when its checkpoint is missing
    # -- data and retrieval (agent options mean what they mean in crosearch_agent.config.Settings)
    collection: str = "xquad-partial"
    tydiqa_collection: str = "tydiqa-goldp"
    tydiqa_share: float = 0.0                    # share of TyDi GoldP train questions among the examples
    languages: list[str] = field(default_factory=lambda: list(XQUAD_LANGS))
    embedder: str = "bundled:multilingual-e5-small"
    retriever_url: str | None = None             # a running retrieval service instead of local indexes
    k: int = 3
    max_turns: int = 2
    max_new_tokens: int = 64
    few_shot: int = 0
    force_first_search: bool = True
    agent_options: dict = field(default_factory=dict)  # any other Settings field, e.g. force_global_search
    # -- multilingual GRPO groups
    multilingual: bool = True                    # False: every rollout of a group in the row's own language
    group_languages: int = 3                     # languages per group: the row's own, English, then random others
    # -- format warm-up (SFT)
    sft_examples: int = 64                       # 0: every XQuAD train question in every language, plus every
                                                 # TyDi GoldP train question when tydiqa_share > 0
    sft_steps: int = 20
    sft_batch_size: int = 1
    sft_grad_accum: int = 4
    sft_learning_rate: float = 2e-5
    sft_max_length: int = 2048
    sft_epochs: float = 0                        # > 0: train this many passes over the rows (sft_steps then ignored)
    sft_save_steps: int = 25                     # resumable warm-up checkpoints every this many optimizer steps
    # -- LoRA (peft) for the warm-up: a small adapter that can ship in the repo (policies/)
    lora_r: int = 0                              # 0: full fine-tuning of the body
    lora_alpha: int = 64
    lora_layers: int = 0                         # adapt only the top N decoder layers (0: all); the backward pass
                                                 # then stops at the lowest adapted layer (faster on CPU)
    # -- GRPO
    steps: int = 10
    num_generations: int = 4
    questions_per_step: int = 1
    per_device_batch_size: int = 1
    learning_rate: float = 1e-6
    beta: float = 0.01                           # KL to the start policy (0 skips the reference model)
    temperature: float = 1.0
    answer_metric: str = "f1"                    # f1 or em, against the gold in the rollout's language
    reward_weights: dict = field(default_factory=lambda: {"answer": 1.0, "format": 0.2, "language": 0.2})
    save_steps: int = 5
    save_total_limit: int = 2
    seed: int = 0
    # -- hardware
    device: str = "auto"                         # auto, cpu or cuda
    bf16: bool = True
    model_dtype: str = "bfloat16"                # weights on GPU (CPU runs keep float32 weights; bf16 autocast
                                                 # only on CPUs with native bf16)
    gradient_checkpointing: bool = False
    freeze_embeddings: bool = False              # keep the (tied) token embedding / LM head fixed: for Gemma 3 270M
                                                 # 62% fewer trained parameters, so far less optimizer memory
    use_vllm: bool = False                       # rollouts through TRL's vLLM engine (GPU only, colocate mode)
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    publish: bool | str = True                   # point <data home>/checkpoints/latest at the result when the gate
                                                 # finds it not worse than the policy served now; "force": always
    gate_questions: int = 4                      # the gate's dev slice: this many XQuAD dev questions per language
    gate_tolerance: float = 0.0                  # how much lower F1 / format-valid rate may be and still publish
    gate_backend: str | None = None              # backend of the gate's eval (default: vllm when installed)

    # ---------------------------------------------------------------- derived paths
    @property
    def checkpoints(self) -> Path:
        return data_home() / "checkpoints"

    @property
    def warmup_dir(self) -> Path:
        return self.checkpoints / self.name / "warmup"

    @property
    def policy_dir(self) -> Path:
        return self.checkpoints / self.name / "policy"

    @property
    def run_dir(self) -> Path:
        return data_home() / "training" / self.name

    def check(self) -> "TrainConfig":
        problems = []
        if self.answer_metric not in ("f1", "em"):
            problems.append(f"answer_metric must be f1 or em, not {self.answer_metric!r}")
        if self.num_generations < 2:
            problems.append("num_generations must be at least 2 (GRPO compares rollouts within a group)")
        if self.per_device_batch_size > 0 and (self.questions_per_step * self.num_generations) % self.per_device_batch_size:
            problems.append("per_device_batch_size must divide questions_per_step * num_generations")
        if not 0.0 <= self.tydiqa_share < 1.0:
            problems.append("tydiqa_share must be in [0, 1)")
        unknown = set(self.reward_weights) - {"answer", "format", "language"}
        if unknown:
            problems.append(f"unknown reward weights {sorted(unknown)}; use answer, format, language")
        if self.publish not in (True, False, "force"):
            problems.append(f"publish must be true, false or force, not {self.publish!r}")
        if self.lora_r < 0 or self.lora_layers < 0:
            problems.append("lora_r and lora_layers must be >= 0")
        if self.group_languages < 1:
            problems.append("group_languages must be at least 1")
        for name in ("steps", "questions_per_step", "per_device_batch_size", "sft_batch_size", "sft_grad_accum",
                     "max_new_tokens", "save_steps", "sft_save_steps"):
            if getattr(self, name) < 1:  # a negative step count reads as "train for every epoch" to transformers
                problems.append(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("sft_steps", "sft_examples", "sft_epochs", "gate_questions"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, not {getattr(self, name)}")
        if problems:
            raise ValueError("bad training config: " + "; ".join(problems))
        return self


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def find_config(name_or_path: str) -> Path:
    """A config by path, or by name in training/configs (`cpu-smoke` or `cpu-smoke.yaml`)."""
    path = Path(name_or_path)
    for candidate in (path, REPO_ROOT / path, CONFIG_DIR / path, CONFIG_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("accelerate")))
    raise ValueError(f"no training config {name_or_path!r}; known: {known}")


def parse_overrides(items: list[str]) -> dict:
    """`--key value` pairs (values read as YAML, so numbers and lists type themselves);
    `--reward_weights.answer 2` sets one entry of a dict; `--flag` alone means true."""
    out: dict = {}
    i = 0
    while i < len(items):
        key = items[i]
        if not key.startswith("--"):
            raise ValueError(f"expected --key value, got {key!r}")
        key = key[2:].replace("-", "_")
        if i + 1 < len(items) and not items[i + 1].startswith("--"):
            value, i = yaml.safe_load(items[i + 1]), i + 2
        else:
            value, i = True, i + 1
        if "." in key:
            outer, inner = key.split(".", 1)
            out.setdefault(outer, {})[inner] = value
        else:
            out[key] = value
    return out


def load_config(name_or_path: str | None = None, overrides: dict | None = None) -> TrainConfig:
    raw = {}
    if name_or_path:
        path = find_config(name_or_path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        raw.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        elif isinstance(value, dict) and key == "reward_weights":
            raw[key] = {**TrainConfig().reward_weights, **value}
        else:
            raw[key] = value
    unknown = set(raw) - _field_names()
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(_field_names())}")
    return TrainConfig(**raw).check()


def config_from_command_line(parser, argv=None, default: str | None = "cpu-smoke"):
    """Parse a training command line: `--config NAME` and any `--key value` overrides after
    the parser's own flags. Returns (args, config), or (args, None) when the config is refused
    (the reason is printed)."""
    import sys

    parser.add_argument("--config", default=default, required=default is None,
                        help="a file in training/configs (name or path)")
    args, rest = parser.parse_known_args(argv)
    try:
        return args, load_config(args.config, parse_overrides(rest))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return args, None


def agent_settings(cfg: TrainConfig, collection: str | None = None):
    """The agent's `Settings` for rollouts of this run (same meaning as the app's flags)."""
    from crosearch_agent.config import Settings

    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(cfg.agent_options) - known
    if unknown:
        raise ValueError(f"unknown agent option(s) {sorted(unknown)} in agent_options; known: {sorted(known)}")
    return Settings(**{**dict(collection=collection or cfg.collection, embedder=cfg.embedder, k=cfg.k,
                                max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens, few_shot=cfg.few_shot,
                                force_first_search=cfg.force_first_search, temperature=cfg.temperature,
                                seed=cfg.seed), **({"retriever_url": cfg.retriever_url} if cfg.retriever_url else {}),
                       **cfg.agent_options})


def device_kind(cfg: TrainConfig) -> str:
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def trainer_device_args(cfg: TrainConfig) -> dict:
    """TrainingArguments for the device: on GPU bf16 mixed precision; on CPU `use_cpu`, with
    bf16 autocast only where the CPU computes bf16 natively (emulated, a step of cpu-small took
    ~9 minutes instead of seconds)."""
    if device_kind(cfg) == "cpu":
        from crosearch_agent.policy import cpu_has_native_bf16

        return {"use_cpu": True, "bf16": cfg.bf16 and cpu_has_native_bf16()}
    return {"bf16": cfg.bf16}


def score_labelled_positions_only() -> None:
    """Make TRL's fused LM head project only the positions that have a label on every
    device, as it does on GPUs.

    It decides by `_use_triton` whether to score the labelled positions alone or every
    position (the latter kept for Neuron's fixed shapes); its CPU kernel handles both. Our
    sequences are mostly retrieved text (no label), so this skips most of the LM head, the
    largest matrix of a small model (Gemma 3 270M: 168M of its 270M parameters).
    """
    import trl.trainer.utils as trl_utils

    trl_utils._use_triton = lambda device: True
