"""The state of resumable training runs: `checkpoint-N` folders that appear whole.

- `AtomicCheckpoints`: a Trainer mix-in whose `checkpoint-N` folders are staged, then renamed
  into the run folder, keeping the newest few;
- `resume_point`: the newest complete checkpoint of a run;
- `seed_checkpoint`: a run's first checkpoint made from a finished LoRA adapter, so that a
  run continues a shipped policy's training instead of starting over;
- `train_to_end`: train from a checkpoint to the run's last step, and no further.

Finished policies (saving, publishing `latest`) are `crosearch_agent.policy_folders`'.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".staging"
# Files a resumable checkpoint must have (trainer_state.json is written last), and one of
# the model's: a full model's config or a LoRA adapter's.
RESUME_FILES = ("trainer_state.json",)
MODEL_FILES = ("config.json", "adapter_config.json")


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


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def seed_checkpoint(run_dir: Path, adapter: Path, step: int, args) -> Path:
    """`<run_dir>/checkpoint-<step>` holding `adapter`'s weights and a trainer state at `step`,
    without optimizer, scheduler or random state: the trainer resumes from it with a fresh
    optimizer (and its learning-rate warm-up), skipping the first `step` batches of the data
    order it would have seen. The trainer takes its batch size and logging and saving intervals
    from a resumed state, so they come from its `args` (TrainingArguments)."""
    from transformers import TrainerControl, TrainerState

    missing = [f for f in ADAPTER_FILES if not (Path(adapter) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter} is not a LoRA adapter folder: it lacks {missing}")
    staging = Path(run_dir) / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copy(Path(adapter) / name, staging / name)
    state = TrainerState(global_step=step, train_batch_size=args.per_device_train_batch_size,
                         logging_steps=args.logging_steps, save_steps=args.save_steps, stateful_callbacks=[TrainerControl()])
    state.save_to_json(str(staging / "trainer_state.json"))
    dest = Path(run_dir) / f"checkpoint-{step}"
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(staging, dest)
    return dest


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


def train_to_end(trainer, resume_from: Path | None, max_steps: int) -> float:
    """Train on from `resume_from` (None: from the start) to `max_steps` (<= 0: the limit the
    checkpoint's trainer state records, as an epoch-sized run has); returns the seconds trained.

    A checkpoint that already holds every step is loaded instead: the trainer would train one
    step past it, since it checks its step limit only after a step."""
    from transformers import TrainerState

    if resume_from is not None:
        state = TrainerState.load_from_json(str(Path(resume_from) / "trainer_state.json"))
        limit = max_steps if max_steps > 0 else state.max_steps
        if limit > 0 and state.global_step >= limit:
            trainer._load_from_checkpoint(str(resume_from))  # what train() loads before its first step
            trainer.state = state
            return 0.0
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return result.metrics.get("train_runtime") or 0.0
