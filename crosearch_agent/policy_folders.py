"""Policy folders: which policy a name means, which one is served, and how trained ones are
saved and published. The one owner of these names and files:

- ids: `bundled:gemma-3-270m` (the raw base, always), `bundled:qwen2.5-coder-1.5b` (the
  larger untrained reader), `shipped:<name>` (a trained adapter this repository ships in
  `policies/`, merged onto the base by `crosearch_agent.bundled`), a folder, or a hub id;
- the default policy: the user's `<data home>/checkpoints/latest` (published by training),
  else the shipped policy, else the raw base;
- `training.json` beside a trained policy's weights: how it was trained, including the agent
  options its prompts had, which serving adopts (`adopt_trained_options`);
- `save_policy` and `publish_latest`, which training calls.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from crosearch_agent.config import data_home, models_home
from crosearch_agent.folders import write_folder

BUNDLED_POLICY = "bundled:gemma-3-270m"          # the raw base model, always
QWEN_POLICY = "bundled:qwen2.5-coder-1.5b"         # the optional second bundled policy (untrained)
SHIPPED_PREFIX = "shipped:"                        # e.g. shipped:crosearch-reader-270m (policies/<name>)
CHECKPOINTS = "checkpoints"                        # <data home>/checkpoints/<run>/..., and `latest`
LATEST = "latest"
INFO = "training.json"


class PolicyNotFound(LookupError):
    """A `shipped:` name this repository does not ship."""


def latest_checkpoint(home: Path | None = None) -> Path | None:
    """The newest policy published by `python -m training.grpo`, if any."""
    pointer = (home or data_home()) / CHECKPOINTS / LATEST
    return pointer.resolve() if pointer.exists() and (pointer / "config.json").exists() else None


def resolve_policy(name: str | None = None) -> str:
    """A model folder or hub id for `name`; None is the default policy: the user's own newest
    checkpoint (`checkpoints/latest`), else the trained policy this repository ships
    (`policies/`), else the raw bundled base. `bundled:gemma-3-270m` is always the raw base;
    `bundled:qwen2.5-coder-1.5b` the larger untrained reader (fetched on first use)."""
    if name == BUNDLED_POLICY:
        from crosearch_agent.bundled import materialise_policy

        return str(materialise_policy())
    if name == QWEN_POLICY:
        from crosearch_agent.bundled_qwen import materialise_qwen

        return str(materialise_qwen())
    if name and name.startswith(SHIPPED_PREFIX):
        folder = shipped_policy(name[len(SHIPPED_PREFIX):])
        if folder is None:
            raise PolicyNotFound(f"this repository ships no policy {name!r} (policies/ has no such folder)")
        return str(folder)
    if name:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name
    return str(default_policy())


def shipped_policy(name: str) -> Path | None:
    """A shipped adapter merged onto the bundled base it was trained over (resolved as its
    `bundled:` name is: the Qwen reader's base is fetched on first use); None when not shipped."""
    from crosearch_agent.bundled import materialise_shipped_policy, shipped_base_id, shipped_policy_artifact

    adapter = shipped_policy_artifact(name)
    if adapter is None:
        return None
    return materialise_shipped_policy(name=name, base=Path(resolve_policy(shipped_base_id(adapter))))


def default_policy() -> Path:
    """The folder served when no policy is named (see `resolve_policy`)."""
    from crosearch_agent.bundled import SHIPPED_POLICY, materialise_policy

    return latest_checkpoint() or shipped_policy(SHIPPED_POLICY) or materialise_policy()


def describe_policy(folder: str | Path) -> str:
    """Which policy a folder is, in words, for status lines: the user's newest checkpoint, the
    shipped trained policy, the raw base, or another folder / hub id."""
    from crosearch_agent.bundled import POLICY_DIR, shipped_policy_artifact
    from crosearch_agent.bundled_qwen import QWEN_DIR

    path = Path(str(folder))
    if (ckpt := latest_checkpoint()) is not None and path.resolve() == ckpt:
        return f"your newest checkpoint ({path.name})"
    if path.parent.resolve() == models_home() and shipped_policy_artifact(path.name) is not None:
        return f"the shipped trained policy {path.name}"
    if path.name == POLICY_DIR and path.parent.resolve() == models_home():
        return "the raw bundled base Gemma 3 270M (untrained)"
    if path.name == QWEN_DIR and path.parent.resolve() == models_home():
        return "the bundled Qwen2.5-Coder-1.5B-Instruct (untrained)"
    return str(folder)


# What a trained policy's prompts looked like (training.json "agent"); other options (the
# collection, temperature, backend) stay the caller's.
TRAINED_OPTIONS = ("k", "max_turns", "max_new_tokens", "few_shot", "force_first_search", "force_global_search",
                   "repeat_evidence")


def adopt_trained_options(settings, exclude=()) -> dict:
    """Give `settings` the prompt-shaping options (`TRAINED_OPTIONS`) its policy was trained
    with (its `training.json`), except those in `exclude` (set by the user); returns what
    changed. A policy trained without worked examples or with shorter turns sees at serving
    time what it saw in training."""
    applied = {}
    for name, value in trained_agent_options(settings.policy).items():
        if name in TRAINED_OPTIONS and name not in exclude and getattr(settings, name) != value:
            setattr(settings, name, value)
            applied[name] = value
    return applied


def adopted_note(applied: dict) -> str:
    """What `adopt_trained_options` changed, as the command-line flags it amounts to."""
    return ("serving the policy with the agent options it was trained with: "
            + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in applied.items()))


def settings_from_command_line(args, argv=None):
    """The `Settings` of a serving command line (ask, eval, the app), given the trained
    options of the policy it serves except those the user set (a note on stderr says which)."""
    import sys

    from crosearch_agent.config import Settings, flags_given

    settings = Settings.from_args(args)
    if applied := adopt_trained_options(settings, exclude=flags_given(argv)):
        print(f"[crosearch] {adopted_note(applied)}", file=sys.stderr)
    return settings


def trained_agent_options(policy: str | None = None) -> dict:
    """The agent options a policy folder was trained with (its `training.json`, written by
    `python -m training.grpo` / `training.sft`); {} for any other policy. `None` reads the
    default policy's (see `resolve_policy`)."""
    if policy in (BUNDLED_POLICY, QWEN_POLICY):
        return {}
    try:
        folder = Path(resolve_policy(policy))  # a hub id gives a path without notes: {}
    except Exception:  # the options are a courtesy: a policy that cannot load fails later, clearly
        return {}
    try:
        options = json.loads((folder / INFO).read_text(encoding="utf-8"))["agent"]
    except (TypeError, OSError, ValueError, KeyError):
        return {}
    return dict(options) if isinstance(options, dict) else {}


def save_policy(model, tokenizer, dest: Path, info: dict, source: str | os.PathLike | None = None,
                state_dict: dict | None = None) -> Path:
    """A policy folder that transformers and vLLM load: bf16 weights, tokenizer, `training.json`.

    Licence files of the source model (e.g. the Gemma terms) travel with the weights.
    `state_dict` is for sharded models (ZeRO-3): the gathered weights.
    """
    import torch

    def write(tmp: Path) -> None:
        state = {k: v.detach().to(torch.bfloat16) if v.is_floating_point() else v
                 for k, v in (state_dict if state_dict is not None else model.state_dict()).items()}
        model.config.dtype = torch.bfloat16
        model.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if source and Path(source).is_dir():
            from crosearch_agent.bundled import copy_licences

            copy_licences(Path(source), tmp)
        (tmp / INFO).write_text(json.dumps(info, indent=2, default=str))

    return write_folder(Path(dest), write)


def is_policy_dir(path: Path) -> bool:
    return (Path(path) / "config.json").is_file() and any(Path(path).glob("*.safetensors"))


def publish_latest(policy_dir: Path, checkpoints: Path) -> Path:
    """Point `<checkpoints>/latest` at `policy_dir` (a relative symlink, swapped atomically)."""
    checkpoints = Path(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    link = checkpoints / LATEST
    if link.exists() and not link.is_symlink():
        raise RuntimeError(f"{link} is a real folder, not the link training maintains; move it away to publish")
    target = os.path.relpath(Path(policy_dir).resolve(), checkpoints.resolve())
    tmp = checkpoints / f".{LATEST}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link
