"""One training run's settings: a YAML file (`training/configs/NAME.yaml`) plus flags from the
command line, checked by one typed dataclass when it is made. The flags come from the fields'
help text through the parser the app's `Settings` use; the agent's settings are nested in it
(`agent:` in the file, `--agent.k 3` on the command line), so rollouts, the warm-up and the
served policy share one source for k, turns and the token budget.

Every path a run writes is derived here from the data home, so the warm-up, GRPO and the
published policy always agree on where things are:

  <data home>/checkpoints/<name>/warmup     the format warm-up (python -m training.sft)
  <data home>/training/<name>/              GRPO's resumable checkpoints, log.csv, curves.png
  <data home>/checkpoints/<name>/policy     the trained policy
  <data home>/checkpoints/latest            -> the newest published policy (what the app serves)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from crosearch_agent.config import (REPO_ROOT, Settings, LanguageList, add_arguments, data_home, language_codes, nested,
                                    option, parse_bool)
from crosearch_agent.languages import XQUAD_LANGS
from crosearch_agent.policy_folders import BUNDLED_POLICY

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REWARD_WEIGHTS = {"answer": 1.0, "format": 0.2, "language": 0.2}
# Settings fields that mean nothing to a training run (its own options say which policy, seed).
NOT_AGENT_OPTIONS = ("policy", "backend", "base_url", "data_dir", "seed")


def training_agent() -> Settings:
    """The agent of a training run unless its config says otherwise: few, short turns, no
    worked examples (the warm-up teaches the format), sampling at temperature 1 (GRPO)."""
    return Settings(k=3, max_turns=2, max_new_tokens=64, few_shot=0, temperature=1.0)


def _publish(text):
    return "force" if str(text).lower() == "force" else parse_bool(text)


@dataclass
class TrainConfig:
    name: str = option("run", "the run's name: its folders under the data home are named after it")
    # -- policies
    base_policy: str = option(BUNDLED_POLICY, "the policy the warm-up starts from")
    policy: str | None = option(None, "GRPO's start (default: this run's warm-up, made first when missing)")
    start_adapter: str | None = option(None, "GRPO: train this LoRA adapter further over base_policy (a folder; relative: "
                                             "in the repository, e.g. policies/NAME) instead of a new adapter over "
                                             "the start policy; the run's adapter then has the same shape and "
                                             "training.ship can ship it")
    warmup: bool = option(True, "run the format warm-up before GRPO when its checkpoint is missing")
    # -- the agent: retrieval, turns, token budget (one source for rollouts, the warm-up and serving)
    agent: Settings = option(factory=training_agent, exclude=NOT_AGENT_OPTIONS,
                             help="the agent's settings for rollouts and the warm-up, as the app's flags mean them; "
                                  "the trained policy is served with them")
    # -- data
    tydiqa_collection: str = option("tydiqa-goldp", "collection of the TyDi GoldP questions")
    tydiqa_share: float = option(0.0, "share of TyDi GoldP train questions among the examples, in [0, 1)")
    languages: list[str] = option(factory=lambda: list(XQUAD_LANGS), help="question languages to train on",
                                  nargs="+", type=language_codes, action=LanguageList)
    # -- multilingual GRPO groups
    multilingual: bool = option(True, "spread each GRPO group over several languages (false: every rollout in the "
                                      "row's own language)")
    group_languages: int = option(3, "languages per group: the row's own, English, then random others")
    # -- format warm-up (SFT)
    sft_examples: int = option(64, "warm-up questions; 0: every XQuAD train question in every language, plus every "
                                   "TyDi GoldP train question when tydiqa_share > 0")
    sft_steps: int = option(20, "warm-up optimizer steps")
    sft_batch_size: int = option(1, "warm-up rows per forward pass")
    sft_grad_accum: int = option(4, "warm-up forward passes per optimizer step")
    sft_learning_rate: float = option(2e-5, "warm-up learning rate")
    sft_max_length: int = option(2048, "warm-up rows longer than this many tokens are dropped")
    sft_epochs: float = option(0.0, "> 0: train this many passes over the rows (sft_steps is then ignored)")
    sft_save_steps: int = option(25, "resumable warm-up checkpoints every this many optimizer steps")
    sft_start_adapter: str | None = option(None, "continue the training of this LoRA adapter (a folder; relative: in the "
                                                 "repository, e.g. policies/NAME) instead of starting over: its weights and the steps its "
                                                 "training.json records become the run's first checkpoint (the optimizer "
                                                 "starts fresh); same data, seed and batch size, so the run goes on "
                                                 "with the rows that adapter has not seen")
    # -- LoRA (peft) for the warm-up: a small adapter that can ship in the repo (policies/)
    lora_r: int = option(0, "LoRA rank; 0: full fine-tuning of the body")
    lora_alpha: int = option(64, "LoRA alpha")
    lora_layers: int = option(0, "adapt only the top N decoder layers (0: all); the backward pass then stops at "
                                 "the lowest adapted layer (faster on CPU)")
    # -- GRPO
    steps: int = option(10, "GRPO optimizer steps")
    num_generations: int = option(4, "rollouts per question (a GRPO group)")
    questions_per_step: int = option(1, "questions per optimizer step")
    per_device_batch_size: int = option(1, "rollouts per forward pass")
    learning_rate: float = option(1e-6, "GRPO learning rate")
    beta: float = option(0.01, "KL to the start policy (0 skips the reference model)")
    answer_metric: str = option("f1", "answer reward against the gold in the rollout's language", choices=["f1", "em"])
    reward_weights: dict = option(factory=lambda: dict(REWARD_WEIGHTS), keys=tuple(REWARD_WEIGHTS), type=float,
                                  help="weight of each reward (answer, format, language); unset ones keep their default")
    save_steps: int = option(5, "GRPO checkpoints every this many steps")
    save_total_limit: int = option(2, "GRPO checkpoints kept")
    seed: int = option(0, "random seed (data order, language assignment, sampling)")
    # -- hardware
    device: str = option("auto", "where to train", choices=["auto", "cpu", "cuda"])
    bf16: bool = option(True, "bf16 mixed precision (on CPU only where it is native)")
    model_dtype: str = option("bfloat16", "weights on GPU (CPU runs keep float32 weights)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    freeze_embeddings: bool = option(False, "keep the (tied) token embedding / LM head fixed: for Gemma 3 270M 62% "
                                            "fewer trained parameters, so far less optimizer memory")
    use_vllm: bool = option(False, "rollouts through TRL's vLLM engine (GPU only, colocate mode)")
    vllm_mode: str = option("colocate", "TRL's vLLM mode")
    vllm_gpu_memory_utilization: float = option(0.3, "share of GPU memory for TRL's vLLM engine")
    publish: bool | str = option(True, "point <data home>/checkpoints/latest at the result when the gate finds it not "
                                       "worse than the policy served now; force: always", type=_publish)
    gate_questions: int = option(4, "the gate's dev slice: this many XQuAD dev questions in each training language")
    gate_tolerance: float = option(0.0, "how much lower F1 / format-valid rate may be and still publish")
    gate_backend: str | None = option(None, "backend of the gate's eval (default: vllm when installed)")

    def __post_init__(self):
        if isinstance(self.agent, dict):
            self.agent = agent_from(self.agent)
        self.reward_weights = {**REWARD_WEIGHTS, **self.reward_weights}
        self.check()

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

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

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
        unknown = set(self.reward_weights) - set(REWARD_WEIGHTS)
        if unknown:
            problems.append(f"unknown reward weights {sorted(unknown)}; use answer, format, language")
        if self.publish not in (True, False, "force"):
            problems.append(f"publish must be true, false or force, not {self.publish!r}")
        if self.lora_r < 0 or self.lora_layers < 0:
            problems.append("lora_r and lora_layers must be >= 0")
        if self.start_adapter and self.policy:
            problems.append("start_adapter trains an adapter over base_policy; policy names another start: set one")
        if self.group_languages < 1:
            problems.append("group_languages must be at least 1")
        for name in ("steps", "questions_per_step", "per_device_batch_size", "sft_batch_size", "sft_grad_accum",
                     "save_steps", "sft_save_steps"):
            if getattr(self, name) < 1:  # a negative step count reads as "train for every epoch" to transformers
                problems.append(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("sft_steps", "sft_examples", "sft_epochs", "gate_questions"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("k", "max_turns", "max_new_tokens"):
            if getattr(self.agent, name) < 1:
                problems.append(f"agent.{name} must be at least 1, not {getattr(self.agent, name)}")
        if problems:
            raise ValueError("bad training config: " + "; ".join(problems))
        return self


def repo_path(path: str) -> Path:
    """A folder option: absolute as given, relative in the repository (`policies/NAME`)."""
    return (REPO_ROOT / path).resolve()


def agent_from(options: dict) -> Settings:
    """The training agent with `options` (a config's `agent:` block) applied; unknown names
    are refused."""
    known = {f.name for f in dataclasses.fields(Settings)} - set(NOT_AGENT_OPTIONS)
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"unknown agent option(s) {sorted(unknown)}; known: {sorted(known)}")
    return dataclasses.replace(training_agent(), **options)


def find_config(name_or_path: str) -> Path:
    """A config by path, or by name in training/configs (`cpu-smoke` or `cpu-smoke.yaml`)."""
    path = Path(name_or_path)
    for candidate in (path, REPO_ROOT / path, CONFIG_DIR / path, CONFIG_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("accelerate")))
    raise ValueError(f"no training config {name_or_path!r}; known: {known}")


def load_config(name_or_path: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """A config file (none: the defaults) with `overrides` on top; nested blocks (`agent`,
    `reward_weights`) are merged entry by entry."""
    raw = {}
    if name_or_path:
        path = find_config(name_or_path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        raw.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
    return TrainConfig(**raw)


def config_from_command_line(parser, argv=None, default: str | None = "cpu-smoke"):
    """Parse a training command line: `--config NAME` and any training option as a flag
    (`--sft_steps 20`, `--agent.k 3`, `--reward_weights.format 0.5`), which overrides the
    config file. Returns (args, config), or (args, None) when the config is refused (the
    reason is printed)."""
    import sys

    parser.add_argument("--config", default=default, required=default is None,
                        help="a file in training/configs (name or path)")
    group = parser.add_argument_group("training options (each overrides the config file's value)")
    dests = add_arguments(group, TrainConfig, overrides=True)
    args = parser.parse_args(argv)
    try:
        return args, load_config(args.config, nested({d: getattr(args, d) for d in dests if hasattr(args, d)}))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return args, None


def agent_settings(cfg: TrainConfig, collection: str | None = None) -> Settings:
    """The agent's `Settings` for rollouts of this run over `collection` (default: the agent's)."""
    return dataclasses.replace(cfg.agent, collection=collection or cfg.agent.collection, seed=cfg.seed)


def agent_options(cfg: TrainConfig) -> dict:
    """The agent's settings as a run records them (training.json "agent"; serving adopts them)."""
    return {k: v for k, v in dataclasses.asdict(agent_settings(cfg)).items()
            if k not in ("data_dir", "policy", "backend", "base_url")}


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
