# `make test` and `make demo` work on a fresh clone: they create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint lint-deploy typecheck pytest bench-smoke demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: lint lint-deploy typecheck pytest bench-smoke

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench

# Dockerfile (hadolint) and Kubernetes manifests (against the API schemas, strict);
# the systemd unit is checked by tests/test_packaging.py with systemd-analyze verify.
lint-deploy: $(STAMP)
	$(BIN)/hadolint Dockerfile
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The benchmark is not a timed test; this only proves it still runs (smallest size).
bench-smoke: $(STAMP)
	$(BIN)/python bench/poll_cycle.py --sizes 1000

demo: $(STAMP)
	$(BIN)/taskwarden demo

bench: $(STAMP)
	$(BIN)/python bench/poll_cycle.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
