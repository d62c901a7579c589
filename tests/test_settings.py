"""A trained policy is served with the prompt-shaping agent options it was trained with
(its training.json), unless the user sets them; other options stay the user's."""
import argparse
import json

from crosearch_agent.config import Settings, flags_given
from crosearch_agent.policy_folders import adopt_trained_options, adopted_note
from crosearch_agent.policy_folders import publish_latest


def _policy(folder, agent):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "training.json").write_text(json.dumps({"kind": "grpo", "agent": agent}))
    return folder


def _settings(argv):
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    settings = Settings.from_args(parser.parse_args(argv))
    adopt_trained_options(settings, exclude=flags_given(argv))
    return settings


TRAINED = {"k": 2, "few_shot": 0, "max_new_tokens": 64, "force_global_search": False,
           "collection": "xquad", "temperature": 1.0}


def test_a_trained_policy_gets_its_training_options_unless_the_user_sets_them(tmp_path):
    policy = _policy(tmp_path / "p", TRAINED)
    s = _settings(["--policy", str(policy), "--k=4"])
    assert (s.k, s.few_shot, s.max_new_tokens, s.force_global_search) == (4, 0, 64, False)
    assert (s.collection, s.temperature) == ("xquad-partial", 0.0)  # not prompt-shaping: the user's defaults
    parsed = Settings(policy=str(policy))
    applied = adopt_trained_options(parsed, exclude={"k"})
    assert applied == {"few_shot": 0, "max_new_tokens": 64, "force_global_search": False}
    assert "--few-shot 0" in adopted_note(applied) and "--k" not in adopted_note(applied)


def test_parsing_settings_reads_no_policy():
    """`from_args` is a pure parser: a policy that does not exist is not opened."""
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    s = Settings.from_args(parser.parse_args(["--policy", "/nowhere/at/all", "--few-shot", "2"]))
    assert (s.policy, s.few_shot) == ("/nowhere/at/all", 2)


def test_the_default_policy_is_the_latest_checkpoint_and_brings_its_options(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path))
    publish_latest(_policy(tmp_path / "checkpoints" / "run" / "policy", TRAINED), tmp_path / "checkpoints")
    assert _settings([]).few_shot == 0
    assert _settings(["--policy", "bundled:gemma-3-270m"]).few_shot == Settings.few_shot


def test_a_policy_without_training_notes_changes_nothing(tmp_path):
    (tmp_path / "plain").mkdir()
    assert _settings(["--policy", str(tmp_path / "plain")]) == Settings(policy=str(tmp_path / "plain"))
    assert _settings(["--policy", "Qwen/Qwen2.5-3B-Instruct"]).k == Settings.k
    assert flags_given(["q", "--few-shot", "0", "--max-turns=2"]) == {"few_shot", "max_turns"}


def test_languages_are_given_with_spaces_or_commas_and_unknown_codes_are_refused_by_name(capsys):
    import pytest

    assert _settings(["--policy", "bundled:gemma-3-270m", "--languages", "de,zh", "ar"]).languages == ["de", "zh", "ar"]
    assert _settings(["--policy", "bundled:gemma-3-270m", "--languages", "DE", "de"]).languages == ["de"]
    parser = argparse.ArgumentParser()  # tools that read the parsed flags directly (indexes.build) get them flat too
    Settings.add_arguments(parser, only=["languages"])
    assert parser.parse_args(["--languages", "de,zh", "ar"]).languages == ["de", "zh", "ar"]
    with pytest.raises(SystemExit):
        _settings(["--languages", "de,xx,zh"])
    assert "unknown language code 'xx'" in capsys.readouterr().err
