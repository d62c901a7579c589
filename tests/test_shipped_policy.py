"""The trained policy this repository ships (`policies/crosearch-reader-270m`): a LoRA adapter
checked by sha256, merged onto the bundled base by the set-up, and served by default when the
user has no checkpoint of their own."""
import shutil

import pytest

from crosearch_agent import bundled
from crosearch_agent.bundled import SHIPPED_POLICY, ArtifactError, shipped_policy_artifact, verify_artifact


def test_the_repository_ships_a_small_adapter_that_matches_its_sha256():
    folder = shipped_policy_artifact()
    assert folder is not None, "policies/ must ship the default policy"
    assert {"adapter_model.safetensors", "adapter_config.json", "training.json", "README.md"} <= {
        p.name for p in folder.iterdir()}
    assert (folder / "adapter_model.safetensors").stat().st_size <= 48 * 2**20
    assert len(verify_artifact(folder)) == 64


@pytest.mark.parametrize("name", bundled.shipped_policies())
def test_every_shipped_adapter_is_small_matches_its_sha256_and_names_a_bundled_base(name):
    from crosearch_agent.policy_folders import BUNDLED_POLICY, QWEN_POLICY

    folder = shipped_policy_artifact(name)
    assert (folder / "adapter_model.safetensors").stat().st_size <= 48 * 2**20
    assert len(verify_artifact(folder)) == 64
    assert bundled.shipped_base_id(folder) in (BUNDLED_POLICY, QWEN_POLICY)


def test_a_tampered_or_incomplete_artifact_is_refused_by_name(tmp_path):
    copy = tmp_path / SHIPPED_POLICY
    shutil.copytree(shipped_policy_artifact(), copy)
    data = bytearray((copy / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "adapter_model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="adapter_model.safetensors does not match its sha256"):
        verify_artifact(copy)
    shutil.copy(shipped_policy_artifact() / "adapter_model.safetensors", copy)
    assert len(verify_artifact(copy)) == 64
    (copy / "adapter_config.json").unlink()
    with pytest.raises(ArtifactError, match="adapter_config.json is missing"):
        verify_artifact(copy)


def test_no_policy_shipped_means_none(tmp_path):
    assert shipped_policy_artifact(root=tmp_path) is None
    assert bundled.materialise_shipped_policy(home=tmp_path, root=tmp_path) is None
    assert bundled.shipped_policies(root=tmp_path) == []


def test_every_shipped_policy_is_listed_the_default_first(tmp_path):
    for name in ("a-reader", SHIPPED_POLICY, "z-reader", "unfinished"):
        (tmp_path / name).mkdir()
        if name != "unfinished":  # a folder without its sums is no artifact
            (tmp_path / name / bundled.SUMS).write_text("")
    assert bundled.shipped_policies(root=tmp_path) == [SHIPPED_POLICY, "a-reader", "z-reader"]
    assert bundled.shipped_policies()[0] == SHIPPED_POLICY


@pytest.mark.slow
def test_setup_merges_it_and_it_is_the_default_policy_with_its_training_options(tmp_path, monkeypatch):
    import json

    import torch
    from safetensors.torch import load_file

    from crosearch_agent.policy_folders import (default_policy, describe_policy, resolve_policy,
                                                trained_agent_options)

    merged = bundled.materialise_shipped_policy()
    base = bundled.materialise_policy()
    assert json.loads((merged / "crosearch.json").read_text())["source"] == f"policies/{SHIPPED_POLICY}"
    ours, theirs = load_file(merged / "model.safetensors"), load_file(base / "model.safetensors")
    changed = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert changed and all("layers." in k and "proj" in k for k in changed)  # LoRA touched only linear layers
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path))  # a home without checkpoints of its own
    assert default_policy() == merged == bundled.materialise_shipped_policy()  # built once
    assert resolve_policy(None) == resolve_policy(f"shipped:{SHIPPED_POLICY}") == str(merged)
    assert resolve_policy("bundled:gemma-3-270m") == str(base)
    assert describe_policy(merged) == f"the shipped trained policy {SHIPPED_POLICY}"
    assert trained_agent_options(None) == json.loads((merged / "training.json").read_text())["agent"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_vllm_backend_serves_the_merged_folder_by_default(tmp_path, monkeypatch):
    from crosearch_agent.policy import Sampling, load_policy, vllm_available

    if not vllm_available():
        pytest.skip("vLLM is not installed (make setup installs it)")
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path))
    policy = load_policy("vllm", None, dtype="float32")
    try:
        assert policy.name == str(bundled.materialise_shipped_policy())
        gen = policy.generate(["Question: Wer schrieb den Faust?\n<think>"], Sampling(max_tokens=16, stop=("</answer>",)))
        assert gen[0].tokens > 0 and gen[0].text.strip()
    finally:
        policy.close()


def test_the_app_menu_offers_every_shipped_policy_and_warns_of_the_qwen_download():
    import app

    labels = {value: label for label, value in app.policy_choices()}
    assert all(f"shipped:{name}" in labels for name in bundled.shipped_policies())
    over_qwen = [n for n in bundled.shipped_policies()
                 if bundled.shipped_base_id(shipped_policy_artifact(n)) == "bundled:qwen2.5-coder-1.5b"]
    assert over_qwen, "policies/ ships the Qwen reader"
    assert all("1.1 GB fetched on first use" in labels[f"shipped:{n}"] for n in over_qwen)
    assert "fetched" not in labels[f"shipped:{SHIPPED_POLICY}"]
