"""Checkpoints on disk, written so that a crash never leaves one half-written where it is used.

- `save_policy`: a servable policy folder (bf16 safetensors, tokenizer, notes), written beside
  its place and renamed into it;
- `AtomicCheckpoints`: a Trainer mix-in whose resumable `checkpoint-N` folders appear whole
  (staged, then renamed), keeping the newest few;
- `resume_point`: the newest complete checkpoint of a run;
- `publish_latest`: `<data home>/checkpoints/latest` swapped to a new policy in one step
  (`crosearch_agent.policy.latest_checkpoint()` is what the app, ask and eval serve by default).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from crosearch_agent.bundled import copy_licences
from crosearch_agent.folders import write_folder

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".staging"
LATEST = "latest"
INFO = "training.json"
# Files a resumable checkpoint must have (trainer_state.json is written last), and one of
# the model's: a full model's config or a LoRA adapter's.
RESUME_FILES = ("trainer_state.json",)
MODEL_FILES = ("config.json", "adapter_config.json")


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


def checkpoint_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete resumable checkpoints of a run, oldest first."""
    found = []
    for path in Path(run_dir).glob("checkpoint-*"):
        m = CHECKPOINT_RE.match(path.name)
        if (m and path.is_dir() and all((path / f).is_file() for f in RESUME_FILES)
                and any((path / f).is_file() for f in MODEL_FILES)):
            found.append((int(m.group(1)), path))
    return sorted(found)


def resume_point(run_dir: Path) -> Path | None:
    steps = checkpoint_steps(run_dir)
    return steps[-1][1] if steps else None


class AtomicCheckpoints:
    """Mix-in for a transformers Trainer: each `checkpoint-N` is written under a staging
    folder and renamed into the run folder when complete; only the newest
    `keep_checkpoints` are kept."""

    keep_checkpoints = 2

    def _save_checkpoint(self, model, trial):
        final = Path(self.args.output_dir)
        staging = final / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        self.args.output_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = str(final)
        if self.args.should_save:
            for done in sorted(staging.glob("checkpoint-*")):
                dest = final / done.name
                if dest.exists():
                    shutil.rmtree(dest)
                os.rename(done, dest)
            shutil.rmtree(staging, ignore_errors=True)
            for _, old in checkpoint_steps(final)[:-self.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
