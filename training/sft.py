"""`python -m training.sft --config NAME`: the format warm-up before GRPO.

The bundled policy is a base model that rarely writes protocol tags. The warm-up shows it
complete trajectories built with the real retriever: the agent loop runs as it does when
serving (forced first search, real `<information>` from the indexes, the same prompt
builder), and a scripted teacher plays the policy, knowing the gold answers:

- a document of an `<information>` (the newest first) holds the gold (in its own language): think
  "Doc N (is in X and) says: ...", then answer in the question's language;
- none does and another search is allowed: say so and search again, which the agent turns
  into a global search over every language (the cross-lingual case);
- still nothing: the trajectory is dropped (the warm-up never teaches a guess).

The teacher is a `TurnRecorder`, so its trajectories have exactly the token layout of GRPO
rollouts; the loss covers the teacher's turns only (`<information>`, forced turns and the
prompt are labelled -100). The result is written atomically to the run's warm-up folder.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

from crosearch_agent import languages, prompts
from crosearch_agent.store import StoreError
from training.config import TrainConfig, agent_options, config_from_command_line
from training.data import make_agent_factory
from training.model import load_trainable
from training.head import IGNORE, labelled_loss
from training.rollout import POLICY, TurnRecorder, run_rollouts



# ---------------------------------------------------------------- the scripted teacher

def _shown_text(item, lang: str) -> tuple[str, str]:
    """(language, text) of an evidence item as `prompts.render_information` shows it."""
    doc = prompts.evidence_doc(item, lang)
    return doc.lang, prompts.truncate(" ".join(doc.text.split()), 700)


def find_gold(items, lang: str, golds_by_lang: dict) -> tuple[int, str, str] | None:
    """(document number, its language, the gold string it holds) of the first shown document
    that contains a gold answer in its own language."""
    for number, item in enumerate(items, 1):
        doc_lang, text = _shown_text(item, lang)
        for gold in golds_by_lang.get(doc_lang, []):
            if gold and gold in text:
                return number, doc_lang, gold
    return None


def answer_turn(number: int, doc_lang: str, found: str, lang: str, answer: str) -> str:
    """The teacher's answer turn: short, so that it fits the serving token budget (a longer
    think, which also repeated the answer, measured 51 Gemma tokens for a cross-lingual case
    and was cut off at 48: the warm-up taught answers that never closed)."""
    if doc_lang == lang:
        think = f"Doc {number} says: {found}."
    else:
        think = f"Doc {number} ({languages.name(doc_lang)}) says: {found}. I answer in {languages.name(lang)}."
    return (f"{prompts.THINK_OPEN}{prompts.escape_document(think)}{prompts.THINK_CLOSE}\n"
            f"{prompts.ANSWER_OPEN}{prompts.escape_document(answer)}{prompts.ANSWER_CLOSE}")


def search_turn(query: str, lang: str) -> str:
    think = "Not found here. I search every language."
    return (f"{prompts.THINK_OPEN}{think}{prompts.THINK_CLOSE}\n"
            f"{prompts.SEARCH_OPEN}{prompts.escape_document(query)}{prompts.SEARCH_CLOSE}")


class TeacherTurns(TurnRecorder):
    """Plays the policy from the gold answers; records which trajectories it could support."""

    def __init__(self, tokenizer, examples: dict):
        super().__init__(tokenizer, "teacher")
        self.examples = examples            # (question, lang) -> (Example, lang)
        self.supported: dict[tuple[str, str], bool] = {}

    def turn(self, trajectory) -> str:
        example, lang = self.examples[(trajectory.question, trajectory.lang)]
        # The newest evidence first: the searches the agent forces come before the first policy
        # turn, and without repeats the local search's gold is not in the global search's.
        evidence = [s for s in trajectory.steps if s.kind == "evidence"]
        hit = next((h for step in reversed(evidence) if (h := find_gold(step.items, lang, example.golds_by_lang))), None)
        opening = trajectory.record.opening  # how the prompt opened the turn: `<think>`, or a prefilled opening
        can_search = (opening == prompts.THINK_OPEN and not trajectory.must_answer
                      and trajectory.searches < trajectory.agent.settings.max_turns)
        variant = example.variant(lang)
        key = (trajectory.question, trajectory.lang)
        if hit is None and can_search:
            # The agent makes a second search global; English wording (when the question has
            # it) varies the query too.
            query = example.variant("en").question if "en" in example.variants and lang != "en" else variant.question
            return search_turn(query, lang)[len(opening):]
        self.supported[key] = hit is not None
        number, doc_lang, found = hit or (1, lang, variant.answers[0])
        full = answer_turn(number, doc_lang, found, lang, variant.answers[0])
        if full.startswith(opening):
            return full[len(opening):]
        if opening == prompts.ANSWER_OPEN:
            return f"{prompts.escape_document(variant.answers[0])}{prompts.ANSWER_CLOSE}"
        self.supported[key] = False  # an opening the teacher cannot continue
        return full

    def policy_turns(self, trajectories, streams, sampling):
        return [(self.encode(self.turn(trajectory)), None) for trajectory in trajectories]


# ---------------------------------------------------------------- the data set

def sft_rows(streams, max_length: int, max_turn_tokens: int | None = None) -> list[dict]:
    """input_ids and labels (-100 except on the policy's tokens). Dropped: sequences over
    `max_length`, and trajectories with a policy turn longer than `max_turn_tokens` (the
    agent's per-turn budget: the policy would be cut off there when serving)."""
    rows = []
    for s in streams:
        if max_turn_tokens and any(n > max_turn_tokens for n in policy_turn_lengths(s.env_mask)):
            continue
        ids = s.prompt_ids + s.completion_ids
        labels = [IGNORE] * len(s.prompt_ids) + [t if m == POLICY else IGNORE for t, m in zip(s.completion_ids, s.env_mask)]
        if len(ids) <= max_length and any(l != IGNORE for l in labels):
            rows.append({"input_ids": ids, "labels": labels})
    return rows


def policy_turn_lengths(env_mask: list[int]) -> list[int]:
    """Token counts of each run of policy tokens in a stream."""
    return [len(list(run)) for source, run in itertools.groupby(env_mask) if source == POLICY]


def build_warmup_data(cfg: TrainConfig, tokenizer, agent_for, log=print, chunk: int = 256) -> tuple[list[dict], dict]:
    """Teacher trajectories for `cfg.sft_examples` examples (several languages, XQuAD and,
    if configured, TyDi), as SFT rows, with counts of what was kept.

    Built in chunks that are cached in the run folder (`warmup-data/`), so an interrupted
    build resumes where it stopped and a resumed training run does not rebuild them; a
    cache made with other settings is discarded."""
    from training.data import load_examples

    examples = load_examples(cfg, n=cfg.sft_examples)
    cache = cfg.run_dir / "warmup-data"
    key = _data_key(cfg, tokenizer, len(examples))
    if _read_json(cache / "key.json") != key:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "key.json").write_text(json.dumps(key, indent=2))
    rows, stats = [], {"examples": len(examples), "supported": 0, "rows": 0, "with_global_search": 0,
                       "tydiqa_share": cfg.tydiqa_share}  # what the data read: the model card says it
    t0, built = time.perf_counter(), 0
    for start in range(0, len(examples), chunk):
        path = cache / f"chunk-{start // chunk:05d}.json"
        part = _read_json(path)
        if part is None:
            part = _teacher_chunk(cfg, tokenizer, agent_for, examples[start:start + chunk])
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(part))
            os.replace(tmp, path)
            built += 1
            done = min(start + chunk, len(examples))
            rate = (time.perf_counter() - t0) / built / chunk
            log(f"warm-up data: {done}/{len(examples)} questions, {len(rows) + len(part['rows'])} rows so far; "
                f"{1 / rate:.1f} questions/s, about {rate * (len(examples) - done) / 60:.0f} min left")
        rows += part["rows"]
        for name in ("supported", "with_global_search"):
            stats[name] += part[name]
    stats["rows"] = len(rows)
    log(f"warm-up data: {len(examples)} questions, {stats['supported']} answerable from the evidence, "
        f"{stats['with_global_search']} of them after a global search; {len(rows)} rows")
    if not rows:
        raise RuntimeError("the warm-up found no trajectory whose evidence holds the answer; "
                           "check the collection's index (python -m indexes.build)")
    return rows, stats


def _teacher_chunk(cfg: TrainConfig, tokenizer, agent_for, examples) -> dict:
    by_question = {(e.variant().question.strip(), e.lang): (e, e.lang) for e in examples}
    teacher = TeacherTurns(tokenizer, by_question)
    streams, kept_cross, n_supported = [], 0, 0
    for collection in dict.fromkeys(e.collection for e in examples):
        batch = [e for e in examples if e.collection == collection]
        agent = agent_for(collection)
        embedder = getattr(agent.retriever, "embedder", None)
        if embedder is not None:  # one batched encoding; the agent's searches then hit the embedder's cache
            embedder.encode_queries([e.variant().question.strip() for e in batch]
                                    + [e.variant("en").question for e in batch if "en" in e.variants])
        rollouts = run_rollouts(agent, teacher, [e.variant().question for e in batch], [e.lang for e in batch])
        for r in rollouts:
            if teacher.supported.get((r.stream.question, r.stream.lang)):
                n_supported += 1
                kept_cross += r.global_searches > 0
                streams.append(r.stream)
    return {"rows": sft_rows(streams, cfg.sft_max_length, cfg.agent.max_new_tokens), "supported": n_supported,
            "with_global_search": kept_cross}


def _data_key(cfg: TrainConfig, tokenizer, n_examples: int) -> dict:
    """What the cached rows depend on."""
    return {"examples": n_examples, "seed": cfg.seed, "collection": cfg.agent.collection, "tydiqa_share": cfg.tydiqa_share,
            "languages": cfg.languages, "max_length": cfg.sft_max_length, "agent": agent_options(cfg),
            "tokenizer": tokenizer.name_or_path and Path(tokenizer.name_or_path).name, "vocab": len(tokenizer)}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def adapter_notes(adapter: Path) -> dict:
    """A saved adapter's training notes (its training.json; empty when it has none)."""
    return _read_json(Path(adapter) / "training.json") or {}


# ---------------------------------------------------------------- training

def run_warmup(cfg: TrainConfig, agent_for=None, log=print) -> Path:
    """Fine-tune the base policy on teacher trajectories; returns the warm-up folder.

    Resumable: the data chunks and the trainer's checkpoints stay in the run folder, and
    running the same command again continues from them (a changed config starts over).
    With `lora_r` > 0 the adapter is also saved on its own (`<run>/adapter`), the small
    artifact that `policies/` ships (`python -m training.ship`)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig

    from crosearch_agent.eval import git_commit
    from crosearch_agent.policy_folders import resolve_policy
    from crosearch_agent.policy_folders import save_policy
    from training.checkpoints import resume_point, train_to_end
    from training.config import device_kind, trainer_device_args
    from training.logs import plot_warmup_loss

    t0 = time.perf_counter()
    base = resolve_policy(cfg.base_policy)
    log(f"warm-up: {base} -> {cfg.warmup_dir}")
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    agent_for = agent_for or make_agent_factory(cfg)
    rows, stats = build_warmup_data(cfg, tokenizer, agent_for, log)
    model = load_trainable(base, cfg)
    work = cfg.run_dir / "warmup-work"
    key = {**_data_key(cfg, tokenizer, stats["examples"]), **{k: getattr(cfg, k) for k in TRAINING_KEYS}}
    if _read_json(work / "key.json") != key:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "key.json").write_text(json.dumps(key, indent=2))
    args = SFTConfig(
        output_dir=str(work), max_steps=-1 if cfg.sft_epochs > 0 else cfg.sft_steps,
        num_train_epochs=cfg.sft_epochs or 1, per_device_train_batch_size=cfg.sft_batch_size,
        gradient_accumulation_steps=cfg.sft_grad_accum, learning_rate=cfg.sft_learning_rate,
        lr_scheduler_type="constant_with_warmup", warmup_steps=min(5, max(cfg.sft_steps, 1) // 5),
        logging_steps=1, save_strategy="steps", save_steps=cfg.sft_save_steps, save_total_limit=1,
        report_to="none", seed=cfg.seed, max_length=cfg.sft_max_length, disable_tqdm=True,
        gradient_checkpointing=cfg.gradient_checkpointing, dataset_num_proc=None,
        **trainer_device_args(cfg))
    resume_from = resume_point(work) or start_from_adapter(cfg, work, args, log)
    trainer = make_sft_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                       processing_class=tokenizer)
    trainer.add_callback(progress_callback(log, cfg.sft_batch_size * cfg.sft_grad_accum))
    clock = training_clock(work, resume_from)
    trainer.add_callback(clock)
    if resume_from:
        log(f"warm-up: resuming from {resume_from} ({clock.earlier:.0f} s of training before it)")
    seconds = clock.earlier + train_to_end(trainer, resume_from, args.max_steps)  # every run that led here
    info = {"kind": "warmup", "run": cfg.name, "base_policy": base, "steps": trainer.state.global_step, "data": stats,
            **loss_ends(trainer.state.log_history),
            "train_seconds": seconds, "rows_trained": trainer.state.global_step * cfg.sft_batch_size * cfg.sft_grad_accum,
            "started_from": _start_note(cfg),
            "device": device_kind(cfg), "agent": agent_options(cfg), "commit": git_commit(),
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "layers": cfg.lora_layers} if cfg.lora_r else None}
    accelerator, main = trainer.accelerator, trainer.accelerator.is_main_process
    if main:
        plot_warmup_loss(trainer.state.log_history, cfg.run_dir / "warmup-loss.png",
                         f"{cfg.name}: warm-up of {Path(base).name}")
    if cfg.lora_r:
        adapter = cfg.run_dir / "adapter"
        if main:
            save_adapter(accelerator.unwrap_model(trainer.model), adapter, info)
        accelerator.free_memory()  # the accelerator holds the model and optimizer too
        del trainer, model
        if main:
            merge_warmup(adapter, base, cfg.warmup_dir)
    else:
        state = accelerator.get_state_dict(trainer.model)  # gathers ZeRO-3 shards (every process takes part)
        if main:
            save_policy(accelerator.unwrap_model(trainer.model), tokenizer, cfg.warmup_dir, info, source=base,
                        state_dict=state)
    accelerator.wait_for_everyone()  # GRPO, on every process, starts from this folder
    log(f"warm-up done in {time.perf_counter() - t0:.0f} s (loss {info['loss_first']} -> {info['loss_last']}); "
        f"saved {cfg.warmup_dir}")
    if not cfg.lora_r:  # a full model's optimizer state is GBs; a LoRA run keeps its last checkpoint to extend
        shutil.rmtree(work, ignore_errors=True)
    return cfg.warmup_dir


def merge_warmup(adapter: Path, base: str | os.PathLike, dest: Path) -> Path:
    """The warm-up folder of a LoRA run: its saved adapter merged onto the base as first use
    merges a shipped policy (`bundled.write_merged`), once the trainer is gone and glibc has handed
    its freed memory back. Merged while the trainer and its optimizer were still held, a Qwen 1.5B
    run with rows of up to 1,280 tokens was killed by the OOM killer at 24 GB saving the weights."""
    import gc

    from crosearch_agent.bundled import write_merged
    from crosearch_agent.folders import write_folder

    gc.collect()
    _return_freed_memory()
    return write_folder(Path(dest), lambda tmp: write_merged(Path(adapter), Path(base), tmp))


def _return_freed_memory() -> None:
    """Ask glibc to give the memory PyTorch freed back to the system (it keeps it otherwise;
    `training/results/*-grpo-memory-*`). A no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def loss_ends(history: list[dict], window: int = 10) -> dict:
    """The mean loss of the first and of the last `window` logged steps (one step's loss, on 8
    rows, swings between 0.1 and 0.9): `loss_first`, `loss_last`."""
    losses = [h["loss"] for h in history if "loss" in h]
    if not losses:
        return {"loss_first": None, "loss_last": None}
    return {"loss_first": round(sum(losses[:window]) / len(losses[:window]), 4),
            "loss_last": round(sum(losses[-window:]) / len(losses[-window:]), 4)}


# Settings that change what the trainer's checkpoints mean (a change starts the training over).
# The number of steps is not one of them: a finished LoRA run rerun with more `sft_steps`
# continues from its last checkpoint (the learning rate is constant after the warm-up steps).
TRAINING_KEYS = ("base_policy", "sft_batch_size", "sft_grad_accum", "sft_learning_rate", "lora_r", "lora_alpha",
                 "lora_layers", "freeze_embeddings", "sft_start_adapter")


def start_from_adapter(cfg: TrainConfig, work: Path, args, log=print) -> Path | None:
    """With `sft_start_adapter`, the run's first checkpoint: that adapter at the step its
    training.json records (its training seconds kept for the run's total); `args`: the
    trainer's arguments."""
    from training.checkpoints import seed_checkpoint

    if not cfg.sft_start_adapter:
        return None
    if not cfg.lora_r:
        raise ValueError("sft_start_adapter continues a LoRA adapter: set lora_r > 0")
    adapter = _start_adapter(cfg)
    info = adapter_notes(adapter)
    step = int(info.get("steps") or 0)
    if step < 1:
        raise ValueError(f"{adapter}/training.json records no training steps to continue from")
    _check_lora_shape(cfg, adapter, info)
    checkpoint = seed_checkpoint(work, adapter, step, args)
    (work / "seconds.json").write_text(json.dumps({str(step): float(info.get("train_seconds") or 0.0)}))
    log(f"warm-up: continuing {adapter} after its {step} steps ({info.get('rows_trained', '?')} rows)")
    return checkpoint


def _check_lora_shape(cfg: TrainConfig, adapter: Path, info: dict) -> None:
    """Refuse to continue an adapter of another rank, alpha or set of layers than the config's:
    the trainer would load only the weights whose names match, or fail deep inside peft."""
    saved = _read_json(adapter / "adapter_config.json")
    if saved is None:
        return  # not an adapter folder at all: seed_checkpoint names the missing files
    layers = saved.get("layers_to_transform")
    shape = (saved.get("r"), saved.get("lora_alpha"), len(layers) if layers else 0)
    wanted = (cfg.lora_r, cfg.lora_alpha, cfg.lora_layers)
    if shape != wanted:
        run = f" (its run's config: {info['run']})" if info.get("run") else ""
        raise ValueError(f"{adapter} is a LoRA of r {shape[0]}, alpha {shape[1]} on {shape[2] or 'all'} layers{run}; "
                         f"this config trains r {wanted[0]}, alpha {wanted[1]} on {wanted[2] or 'all'} layers: "
                         "continue it with the config it was trained with")


def _start_adapter(cfg: TrainConfig) -> Path:
    """`sft_start_adapter` as a folder; a relative one is in the repository (`policies/NAME`)."""
    from training.config import repo_path

    return repo_path(cfg.sft_start_adapter)


def _start_note(cfg: TrainConfig) -> dict | None:
    """What a continued run started from, for its training.json: the adapter, its steps,
    time and commit, and what its run read (the card of the continued run tells it)."""
    if not cfg.sft_start_adapter:
        return None
    from crosearch_agent.config import portable

    adapter = _start_adapter(cfg)
    info = adapter_notes(adapter)
    return portable({"adapter": str(adapter), "steps": info.get("steps"), "rows_trained": info.get("rows_trained"),
                     "train_seconds": info.get("train_seconds"), "commit": info.get("commit"),
                     "data": info.get("data")})


def save_adapter(model, folder: Path, info: dict) -> Path:
    """The LoRA adapter alone (peft's safetensors + config) and its training notes, atomically."""
    from crosearch_agent.folders import write_folder
    from crosearch_agent.policy_folders import INFO

    def write(tmp: Path) -> None:
        # the trained adapter only: a GRPO run also holds TRL's frozen reference copy ("ref")
        model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=["default"])
        # peft's generic card names this machine's base path; training.json holds the notes and
        # `training.ship` writes the real card
        (tmp / "README.md").unlink(missing_ok=True)
        (tmp / INFO).write_text(json.dumps(info, indent=2, default=str))

    write_folder(folder, write)
    return folder


def training_clock(work: Path, resume_from: Path | None):
    """A trainer callback that keeps the training seconds behind each checkpoint
    (`<work>/seconds.json`), so that a resumed run reports the time of every run that led to
    it, not of its last leg (`.earlier`: the seconds behind `resume_from`)."""
    from transformers import TrainerCallback

    path = work / "seconds.json"
    by_step = (_read_json(path) or {}) if resume_from else {}
    step = resume_from.name.split("-")[-1] if resume_from else None

    class Clock(TrainerCallback):
        earlier = float(by_step.get(step, 0.0)) if step else 0.0
        t0 = None

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_save(self, args, state, control, **kw):
            by_step[str(state.global_step)] = round(self.earlier + time.perf_counter() - self.t0, 1)
            path.write_text(json.dumps(by_step, indent=1))

    return Clock()


def progress_callback(log=print, rows_per_step: int = 1, every: int = 5):
    """A trainer callback that logs, every few steps, the loss, seconds per row, the time left
    and the process's resident and peak memory (the trainer's own bar is off: it garbles the
    logs of background runs)."""
    from transformers import TrainerCallback

    from training.logs import memory_mb

    class ProgressLog(TrainerCallback):
        t0 = first = None

        def on_step_end(self, args, state, control, **kw):
            if self.t0 is None:  # timed from the first step: start-up and a resumed run's skip excluded
                self.t0, self.first = time.perf_counter(), state.global_step
                return
            done = state.global_step - self.first
            if state.global_step % every == 0 and done > 0:
                per_step = (time.perf_counter() - self.t0) / done
                loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), float("nan"))
                resident, peak = memory_mb()
                log(f"warm-up step {state.global_step}/{state.max_steps}: loss {loss:.3f}, "
                    f"{per_step / rows_per_step:.2f} s/row, about "
                    f"{per_step * (state.max_steps - state.global_step) / 60:.0f} min left; "
                    f"resident {resident / 1024:.1f} GB, peak {peak / 1024:.1f} GB")

    return ProgressLog()


def make_sft_trainer_class():
    """SFTTrainer whose loss projects only the labelled positions through the LM head
    (`labelled_loss`). The loss is the sum over labelled tokens divided by their number in
    the whole accumulated batch, as transformers does it; checkpoints appear atomically."""
    from trl import SFTTrainer

    from training.checkpoints import AtomicCheckpoints

    class Trainer(AtomicCheckpoints, SFTTrainer):
        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = labelled_loss(model, inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"],
                                 num_items_in_batch)
            if num_items_in_batch is None:
                loss = loss / self.current_gradient_accumulation_steps
            elif self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # num_items_in_batch counts every device's tokens
            return (loss, None) if return_outputs else loss

    return Trainer


def profile_rows(cfg: TrainConfig, tokens: int = 700, scored: int = 24, repeats: int = 3, log=print) -> dict:
    """Seconds per warm-up row on this machine: forward and backward of one row of `tokens`
    tokens, the loss on its last `scored` (a teacher turn), for the config's base policy,
    LoRA and precision; what a run is sized by. The first pass (allocation, kernel choice)
    is timed apart."""
    import torch

    from crosearch_agent.policy_folders import resolve_policy
    from training.config import device_kind, trainer_device_args

    device = "cuda" if device_kind(cfg) == "cuda" else "cpu"
    model = load_trainable(resolve_policy(cfg.base_policy), cfg).to(device)
    model.train()
    ids = torch.randint(100, min(model.config.vocab_size, 20_000), (1, tokens), device=device)
    labels = torch.full_like(ids, IGNORE)
    labels[:, -scored:] = ids[:, -scored:]
    bf16 = trainer_device_args(cfg).get("bf16", False)
    seconds = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = labelled_loss(model, ids, torch.ones_like(ids), labels)
        loss.backward()
        seconds.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    per_row = sorted(seconds[1:])[len(seconds[1:]) // 2]
    result = {"policy": cfg.base_policy, "tokens": tokens, "scored": scored, "bf16": bf16, "device": device,
              "threads": torch.get_num_threads(), "lora": {"r": cfg.lora_r, "layers": cfg.lora_layers} if cfg.lora_r else None,
              "first_pass_s": float(f"{seconds[0]:.3g}"), "seconds_per_row": float(f"{per_row:.3g}"),
              "rows_per_hour": int(3600 / per_row)}
    log(f"warm-up row cost: {per_row:.2f} s per row of {tokens} tokens ({result['rows_per_hour']} rows an hour; "
        f"{cfg.base_policy}, {_trained_weights(cfg)}, "
        f"{'bf16 autocast' if bf16 else 'float32'}, {device})")
    return result


def _trained_weights(cfg: TrainConfig) -> str:
    """Which weights a run trains, in words."""
    if not cfg.lora_r:
        return "full fine-tuning"
    return f"LoRA r {cfg.lora_r} on {f'the top {cfg.lora_layers}' if cfg.lora_layers else 'all'} layers"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sft", description=__doc__.splitlines()[0],
                                     epilog="The config file's options can be overridden by the flags above.")
    parser.add_argument("--profile", type=int, default=0, metavar="TOKENS",
                        help="measure seconds per warm-up row of this many tokens for the config's model, LoRA and "
                             "precision, and stop (size a run by it)")
    args, cfg = config_from_command_line(parser, argv)
    if cfg is None:
        return 2
    if args.profile:
        print(json.dumps(profile_rows(cfg, tokens=args.profile)))
        return 0
    try:
        run_warmup(cfg)
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"warmup": str(cfg.warmup_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
