# The two commands of the README: `make run` and `make test`. Both set up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The install is redone whenever requirements.txt changes.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt scripts/install_engine.sh | sha256sum | cut -c1-16)

.PHONY: setup models browser run test test-fast clean-home

setup: $(STAMP) models browser

$(STAMP): requirements.txt scripts/install_engine.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	scripts/install_engine.sh $(PY)
	@rm -f $(VENV)/.installed-* && touch $@

# Debian's chromium for the Playwright browser tests (skipped when already there).
browser:
	@scripts/install_chromium.sh

# Bundled weights are materialised once into the data home (idempotent, fast when done).
models: $(STAMP)
	$(PY) -m crosearch_agent.bundled

run: setup
	$(PY) app.py

# The whole suite, slow real-model tests included (CI runs this).
test: setup
	$(PY) -m pytest -m "slow or not slow" --durations=25

# Only the fast tests (the default of a bare `pytest`).
test-fast: setup
	$(PY) -m pytest

clean-home:
	rm -rf .crosearch
