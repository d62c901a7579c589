"""The publishing gate: a new policy replaces the one served by default only when it is not
worse on a fixed dev slice; `publish: force` overrides, `publish: false` never publishes."""
import json
import shutil

import pytest

from crosearch_agent.policy_folders import latest_checkpoint
from training.config import load_config
from training.gate import decide


def test_a_candidate_worse_on_f1_or_format_is_kept_back():
    incumbent = {"f1": 0.40, "valid": 0.95}
    assert decide({"f1": 0.41, "valid": 0.95}, incumbent).publish
    assert decide({"f1": 0.40, "valid": 0.96}, incumbent).publish
    worse_f1 = decide({"f1": 0.30, "valid": 1.00}, incumbent)
    assert not worse_f1.publish and "f1 0.300 < 0.400" in worse_f1.reason
    worse_format = decide({"f1": 0.50, "valid": 0.50}, incumbent)
    assert not worse_format.publish and "valid 0.500 < 0.950" in worse_format.reason
    assert decide({"f1": 0.39, "valid": 0.95}, incumbent, tolerance=0.02).publish


def test_publish_must_be_true_false_or_force():
    assert load_config("cpu-smoke", {"publish": "force"}).publish == "force"
    with pytest.raises(ValueError, match="publish must be true, false or force"):
        load_config("cpu-smoke", {"publish": "sometimes"})


def _policy(path, marker):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"marker": marker}))
    (path / "model.safetensors").write_bytes(marker.encode())
    return path


def test_the_gate_decides_what_becomes_latest(tmp_path, monkeypatch):
    """With a stand-in scorer (the real one is the eval, below): a worse run stays in its
    folder, a better one is published, a forced one is published unscored."""
    from training.grpo import publish_if_not_worse

    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path))
    cfg = load_config("cpu-smoke")
    good = _policy(tmp_path / "checkpoints" / "good" / "policy", "good")
    bad = _policy(tmp_path / "checkpoints" / "bad" / "policy", "bad")
    scores = {"good": {"f1": 0.5, "valid": 1.0, "n": 12}, "bad": {"f1": 0.0, "valid": 0.0, "n": 12}}
    monkeypatch.setattr("training.gate.slice_scores", lambda policy, cfg, log: scores[json.loads(
        open(f"{policy}/config.json").read())["marker"]])
    monkeypatch.setattr("crosearch_agent.policy_folders.default_policy", lambda: latest_checkpoint() or good)

    assert publish_if_not_worse(cfg, good, log=lambda *_: None)
    assert latest_checkpoint() == good.resolve()
    assert not publish_if_not_worse(cfg, bad, log=lambda *_: None)
    assert latest_checkpoint() == good.resolve()
    kept = json.loads((bad / "gate.json").read_text())
    assert kept["publish"] is False and "worse than the policy it would replace" in kept["reason"]
    cfg.publish = "force"
    assert publish_if_not_worse(cfg, bad, log=lambda *_: None)
    assert latest_checkpoint() == bad.resolve()
    cfg.publish = False
    assert not publish_if_not_worse(cfg, good, log=lambda *_: None)
    assert latest_checkpoint() == bad.resolve()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_broken_candidate_never_replaces_the_shipped_policy(tmp_path, monkeypatch, shared_data):
    """The real gate: the shipped policy against a candidate with random weights, both
    through the eval on one dev question in each of three languages (transformers backend)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from crosearch_agent.bundled import materialise_shipped_policy, shipped_policy_artifact
    from crosearch_agent.config import Settings, data_home
    from crosearch_agent.eval import ensure_index
    from training.grpo import publish_if_not_worse

    if shipped_policy_artifact() is None:
        pytest.skip("this checkout ships no policy")
    ensure_index(Settings())
    shipped = materialise_shipped_policy()
    home = tmp_path / "home"
    (home / "checkpoints").mkdir(parents=True)
    (home / "indexes").symlink_to(data_home() / "indexes", target_is_directory=True)
    monkeypatch.setenv("CROSEARCH_HOME", str(home))
    broken = home / "checkpoints" / "broken" / "policy"
    shutil.copytree(shipped, broken)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shipped)).to(torch.bfloat16).save_pretrained(broken)
    cfg = load_config("cpu-smoke", {"gate_questions": 1, "gate_backend": "transformers", "languages": ["de", "zh", "ar"]})

    assert not publish_if_not_worse(cfg, broken)
    decision = json.loads((broken / "gate.json").read_text())
    assert decision["incumbent"]["valid"] > decision["candidate"]["valid"]
    assert latest_checkpoint() is None
