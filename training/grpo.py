"""`python -m training.grpo --config NAME [--resume] [--key value ...]`: GRPO on the agent loop.

One command from the base model to a published policy: when the config names a warm-up and
its checkpoint is missing, the format warm-up (training.sft) runs first. Then TRL's
`GRPOTrainer` trains with a `rollout_func` that drives the project's own agent loop
(training.rollout), the policy being trained as its backend; retrieved tokens are masked
from the loss (env_mask). Each group's rollouts are spread over several languages of one
parallel question (training.data), each scored against its own language's gold
(training.rewards), with group-relative advantages across all of them.

Checkpoints are written atomically and `--resume` continues from the newest; at the end the
policy is saved and published as `<data home>/checkpoints/latest`, which the app, ask and
eval serve by default. Logs: `<data home>/training/<name>/log.csv` and `curves.png`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from crosearch_agent.store import StoreError
from training.config import TrainConfig, config_from_command_line, device_kind, trainer_device_args

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL 1.16


def start_policy(cfg: TrainConfig, log=print) -> str:
    """GRPO's starting point: `policy` if given, else the run's warm-up (made now if missing)."""
    from crosearch_agent.policy_folders import resolve_policy
    from crosearch_agent.policy_folders import is_policy_dir

    if cfg.policy:
        return resolve_policy(cfg.policy)
    if cfg.start_adapter or not cfg.warmup:  # a start adapter goes over the base itself
        return resolve_policy(cfg.base_policy)
    if not is_policy_dir(cfg.warmup_dir):
        from training.sft import run_warmup

        log(f"no warm-up checkpoint at {cfg.warmup_dir}: running the format warm-up first")
        run_warmup(cfg, log=log)
    return str(cfg.warmup_dir)


def grpo_args(cfg: TrainConfig):
    from trl import GRPOConfig

    from training.rewards import REWARD_NAMES

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = cfg.questions_per_step * cfg.num_generations
    if per_step % (cfg.per_device_batch_size * processes):
        raise ValueError(f"questions_per_step * num_generations ({per_step}) must be a multiple of "
                         f"per_device_batch_size * processes ({cfg.per_device_batch_size} * {processes})")
    on_cpu = device_kind(cfg) == "cpu"
    extra = {}
    if cfg.use_vllm:
        if on_cpu:
            raise ValueError("use_vllm needs a GPU (TRL's vLLM integration); CPU runs sample with transformers")
        extra = dict(use_vllm=True, vllm_mode=cfg.vllm_mode, vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
    return GRPOConfig(
        output_dir=str(cfg.run_dir), max_steps=cfg.steps, per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=per_step // (cfg.per_device_batch_size * processes),
        num_generations=cfg.num_generations, learning_rate=cfg.learning_rate, beta=cfg.beta,
        temperature=cfg.agent.temperature, top_p=1.0, top_k=0, max_completion_length=cfg.agent.max_new_tokens,
        reward_weights=[float(cfg.reward_weights.get(name, 0.0)) for name in REWARD_NAMES],
        mask_truncated_completions=False, logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=None, report_to="none", seed=cfg.seed, data_seed=cfg.seed,
        gradient_checkpointing=cfg.gradient_checkpointing, lr_scheduler_type="constant_with_warmup",
        warmup_steps=0,
        model_init_kwargs=None if cfg.freeze_embeddings else {"dtype": "float32" if on_cpu else cfg.model_dtype},
        log_completions=False, **extra, **trainer_device_args(cfg))


def make_trainer_class():
    """GRPOTrainer with atomic checkpoints that scores log-probabilities on the policy's
    tokens only.

    TRL scores every completion token and masks the loss afterwards; here ~90% of a
    completion is retrieved text (env_mask 0), so only the policy's own tokens go through
    the LM head (`training.head.scored_logps`, the warm-up's fast path). The mask comes from
    the batch (`tool_mask`) in the loss, and from the rollout for the old/reference
    log-probabilities computed right after generation. Without a mask (or for what this
    path does not cover) TRL's own fused head runs.
    """
    import torch
    from trl import GRPOTrainer

    from training.checkpoints import AtomicCheckpoints
    from training.head import scored_logps

    class Trainer(AtomicCheckpoints, GRPOTrainer):
        score_mask = None

        def _compute_loss(self, model, inputs):
            self.score_mask = inputs.get("tool_mask")
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self.score_mask = None

        def _generate_and_score_completions(self, inputs):
            try:
                return super()._generate_and_score_completions(inputs)
            finally:
                self.score_mask = None

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **multimodal):
            mask = self.score_mask
            if (mask is None or compute_aux_loss or any(v is not None for v in multimodal.values())
                    or tuple(mask.shape) != (input_ids.size(0), logits_to_keep)):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                    compute_aux_loss, **multimodal)
            batch_size = batch_size or input_ids.size(0)
            logps, entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                ids, att = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
                scored = att.bool().clone()
                scored[:, :-logits_to_keep] = False
                scored[:, -logits_to_keep:] &= mask[start:start + batch_size].to(ids.device).bool()
                with self.accelerator.autocast():
                    lp, ent = scored_logps(model, ids, att, scored, self.temperature, compute_entropy)
                logps.append(lp[:, -logits_to_keep:])
                if compute_entropy:
                    entropies.append(ent[:, -logits_to_keep:])
            return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None

    return Trainer


def env_mask_tensor(masks: list[list[int]], device=None):
    """Rollout env_masks padded on the right with 1, as TRL pads its `tool_mask`."""
    import torch

    width = max(len(m) for m in masks)
    return torch.tensor([m + [1] * (width - len(m)) for m in masks], device=device)


def make_recorder_factory(cfg: TrainConfig, tokenizer):
    """`recorder_for(trainer)`: the trained model as the agent's backend (one per trainer)."""
    from training.rollout import ModelTurns, VLLMTurns

    cache = {}

    def recorder_for(trainer):
        if "r" not in cache:
            if cfg.use_vllm:
                cache["r"] = VLLMTurns(trainer.vllm_generation.llm, tokenizer, cfg.seed)
            else:
                model = trainer.accelerator.unwrap_model(trainer.model)
                # sampled under bf16 autocast where the trainer computes in it
                cache["r"] = ModelTurns(model, tokenizer, cfg.seed, autocast_bf16=bool(trainer.args.bf16))
        return cache["r"]

    return recorder_for


def train(cfg: TrainConfig, resume: bool = False, restart: bool = False, log=print) -> Path:
    from datasets import Dataset
    from transformers import AutoTokenizer

    from crosearch_agent import policy_folders
    from training import checkpoints, data, rewards
    from training.logs import StepLogger
    from training.rollout import RolloutStats, make_rollout_func
    from crosearch_agent.config import portable
    from crosearch_agent.eval import git_commit
    from training.config import agent_options, repo_path
    from training.data import make_agent_factory
    from training.sft import adapter_notes, save_adapter
    from training.model import load_trainable

    t0 = time.perf_counter()
    run_dir = cfg.run_dir
    resume_from = checkpoints.resume_point(run_dir) if resume else None
    if resume and resume_from is None:
        log(f"nothing to resume in {run_dir}: starting from the beginning")
    if not resume and checkpoints.checkpoint_steps(run_dir):
        if not restart:
            raise ValueError(f"{run_dir} holds checkpoints of an earlier run; "
                             "continue it with --resume or start over with --restart")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.as_dict(), indent=2, default=str))

    agent_for = make_agent_factory(cfg)
    policy = start_policy(cfg, log) if resume_from is None else json.loads(
        (run_dir / "start_policy.json").read_text())["policy"]
    (run_dir / "start_policy.json").write_text(json.dumps({"policy": policy}))
    log(f"GRPO: {policy} ({cfg.steps} steps, {cfg.questions_per_step} x {cfg.num_generations} rollouts per step, "
        f"{'multilingual' if cfg.multilingual else 'one language per'} groups) -> {cfg.policy_dir}")

    examples = data.load_examples(cfg)
    by_key = {e.key: e for e in examples}
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    stats = RolloutStats()
    rollouts = make_rollout_func(by_key, cfg, agent_for, make_recorder_factory(cfg, tokenizer), stats)

    def rollout_func(prompts_, trainer):
        out = rollouts(prompts_, trainer)
        trainer.score_mask = env_mask_tensor(out["env_mask"], trainer.accelerator.device)
        return out

    Trainer = make_trainer_class()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rollout_func.*")
        adapter = repo_path(cfg.start_adapter) if cfg.start_adapter else None
        if adapter is not None:
            log(f"training the LoRA adapter {adapter} further")
        model = load_trainable(policy, cfg, adapter) if cfg.freeze_embeddings or adapter else policy
        trainer = Trainer(model=model, reward_funcs=rewards.reward_funcs(cfg.answer_metric), args=grpo_args(cfg),
                          train_dataset=Dataset.from_dict({"prompt": [e.key for e in examples]}),
                          processing_class=tokenizer, rollout_func=rollout_func)
    trainer.keep_checkpoints = cfg.save_total_limit
    resume_step = int(resume_from.name.split("-")[1]) if resume_from else None
    logger = StepLogger(run_dir, stats, f"{cfg.name}: GRPO from {(adapter or Path(policy)).name}", resume_step)
    trainer.add_callback(logger)
    if resume_from:
        log(f"resuming from {resume_from}")
    seconds = checkpoints.train_to_end(trainer, resume_from, cfg.steps)

    rows = logger.rows
    # The logger's clock spans every leg of a resumed run; the trainer's only this process's.
    info = {"kind": "grpo", "run": cfg.name, "start_policy": policy, "steps": trainer.state.global_step,
            "train_seconds": logger.elapsed or seconds, "wall_seconds": round(time.perf_counter() - t0, 1),
            "device": device_kind(cfg), "agent": agent_options(cfg), "config": cfg.as_dict(), "commit": git_commit(),
            "first_step": rows[0] if rows else None, "last_step": rows[-1] if rows else None}
    state = trainer.accelerator.get_state_dict(trainer.model)  # gathers ZeRO-3 shards (every process takes part)
    if trainer.accelerator.is_main_process:
        trained = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(trained, "merge_and_unload"):  # a LoRA run: the served policy is the merged model
            if adapter is not None:  # the same shape as the adapter it continued: training.ship ships it
                start = portable({"adapter": str(adapter), "training": adapter_notes(adapter)})
                save_adapter(trained, run_dir / "adapter", {**info, "started_from": start})
            trained, state = trained.merge_and_unload(), None
        policy_folders.save_policy(trained, tokenizer, cfg.policy_dir, info, source=policy, state_dict=state)
        publish_if_not_worse(cfg, cfg.policy_dir, log)
    trainer.accelerator.wait_for_everyone()
    log(f"GRPO done: {trainer.state.global_step} steps in {time.perf_counter() - t0:.0f} s; log {run_dir / 'log.csv'}")
    return cfg.policy_dir


def publish_if_not_worse(cfg: TrainConfig, policy_dir: Path, log=print) -> bool:
    """Publish `policy_dir` as `latest` when the gate (training.gate) lets it; its decision is
    written beside the policy (`gate.json`)."""
    from crosearch_agent import policy_folders
    from training.gate import gate

    if cfg.publish is False:
        log(f"not published (publish: false); the policy is in {policy_dir}")
        return False
    decision = gate(policy_dir, cfg, log)
    (policy_dir / "gate.json").write_text(json.dumps(dataclasses.asdict(decision), indent=2))
    if not decision.publish:
        log(f"not published: {decision.reason}; the policy stays in {policy_dir} (--publish force publishes it)")
        return False
    link = policy_folders.publish_latest(policy_dir, cfg.checkpoints)
    log(f"published {policy_dir} as {link}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.grpo", description=__doc__.splitlines()[0],
                                     epilog="Any training option can follow as --key value, e.g. --steps 50 "
                                            "--policy PATH --multilingual false (see training/config.py).")
    parser.add_argument("--resume", action="store_true", help="continue the run from its newest checkpoint")
    parser.add_argument("--restart", action="store_true", help="discard the run's earlier checkpoints and start over")
    args, cfg = config_from_command_line(parser, argv)
    if cfg is None:
        return 2
    try:
        train(cfg, resume=args.resume, restart=args.restart)
    except (ValueError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
