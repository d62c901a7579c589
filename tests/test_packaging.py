"""`pip install -e .` beside `make`: every console command in pyproject.toml names a `main`
that exists and answers `--help`, and the packages it declares are the project's own."""
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PROJECT["project"]["scripts"]


def test_the_commands_users_run_are_declared():
    for name in ("crosearch-app", "crosearch-ask", "crosearch-eval", "crosearch-serve-retrieval"):
        assert name in SCRIPTS


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_command_points_at_a_main_function(name):
    module, func = SCRIPTS[name].split(":")
    assert callable(getattr(importlib.import_module(module), func))


@pytest.mark.parametrize("name", ["crosearch-ask", "crosearch-eval", "crosearch-build-index"])
def test_a_command_answers_help_without_loading_models(name, capsys):
    module, func = SCRIPTS[name].split(":")
    with pytest.raises(SystemExit) as done:
        getattr(importlib.import_module(module), func)(["--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_declared_packages_are_the_projects_folders():
    found = PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in found:
        assert (ROOT / pattern.rstrip("*") / "__init__.py").is_file()
    for module in PROJECT["tool"]["setuptools"]["py-modules"]:
        assert (ROOT / f"{module}.py").is_file()
