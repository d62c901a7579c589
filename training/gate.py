"""The publishing gate: a run's new policy becomes `checkpoints/latest` (what the app, ask and
eval serve by default) only when it is not worse than the policy it would replace.

Both are scored the same way on a fixed slice of XQuAD dev questions (`gate_questions` per
language, `crosearch`, each policy with the agent options it was trained with): the
candidate must reach the incumbent's F1 and format-valid rate, less `gate_tolerance`.
Otherwise the run says so and its policy stays in its own folder. `publish: force` skips
the gate; `publish: false` never publishes. The incumbent's scores are cached by its folder
and the slice, so a series of runs pays for them once.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from crosearch_agent.config import data_home

METRICS = ("f1", "valid")


@dataclass
class Decision:
    publish: bool
    reason: str
    candidate: dict
    incumbent: dict | None


def decide(candidate: dict, incumbent: dict | None, tolerance: float = 0.0) -> Decision:
    """Not worse on every metric of `METRICS` (within `tolerance`); no incumbent: publish."""
    if incumbent is None:
        return Decision(True, "nothing is published yet", candidate, None)
    worse = [f"{m} {candidate[m]:.3f} < {incumbent[m]:.3f}" for m in METRICS
             if candidate[m] < incumbent[m] - tolerance]
    if worse:
        return Decision(False, "worse than the policy it would replace: " + ", ".join(worse), candidate, incumbent)
    return Decision(True, "not worse than the policy it would replace (" + ", ".join(
        f"{m} {candidate[m]:.3f} vs {incumbent[m]:.3f}" for m in METRICS) + ")", candidate, incumbent)


def slice_scores(policy: str, cfg, log=print) -> dict:
    """F1 and format-valid rate of `policy` on the gate's dev slice."""
    from crosearch_agent.config import Settings
    from crosearch_agent.eval import run_qa
    from crosearch_agent.policy_folders import adopt_trained_options

    settings = Settings(collection=cfg.agent.collection, languages=list(cfg.languages), policy=policy,
                        backend=cfg.gate_backend, seed=cfg.seed)
    adopt_trained_options(settings)
    log(f"gate: scoring {policy} on {cfg.gate_questions} dev questions in each of {len(cfg.languages)} languages")
    results, _, _ = run_qa(settings, "xquad", "dev", ["crosearch"], cfg.gate_questions)
    overall = results["crosearch"]["overall"]
    return {"f1": overall["f1"], "valid": overall["valid"], "n": overall["n"]}


def _cache_key(policy: Path, cfg) -> str:
    stamp = max((p.stat().st_mtime_ns for p in policy.glob("*.safetensors")), default=0)
    # "spread": the slice's questions as eval.spread picks them (scores of the file-order pick are stale)
    return json.dumps([str(policy), stamp, cfg.agent.collection, cfg.gate_questions, "spread", cfg.gate_backend,
                       cfg.seed, sorted(cfg.languages)])


def incumbent_scores(cfg, log=print, scorer=None) -> tuple[str, dict]:
    """The policy served by default now and its slice scores (cached in `<data home>/gate`)."""
    from crosearch_agent.policy_folders import default_policy

    scorer = scorer or slice_scores
    policy = default_policy().resolve()
    cache_file = data_home() / "gate" / "scores.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    key = _cache_key(policy, cfg)
    if key not in cache:
        cache[key] = scorer(str(policy), cfg, log)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=2))
    return str(policy), cache[key]


def gate(candidate: Path, cfg, log=print, scorer=None) -> Decision:
    """Score the candidate and the incumbent; say what was decided and why."""
    scorer = scorer or slice_scores
    if cfg.publish == "force":
        return Decision(True, "publishing forced (--publish force)", {}, None)
    incumbent, theirs = incumbent_scores(cfg, log, scorer)
    ours = scorer(str(candidate), cfg, log)
    decision = decide(ours, theirs, cfg.gate_tolerance)
    decision = dataclasses.replace(decision, reason=f"{decision.reason} [incumbent: {incumbent}]")
    log(f"gate: {'publish' if decision.publish else 'keep'} {candidate}: {decision.reason}")
    return decision
