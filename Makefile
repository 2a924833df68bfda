# `make test` and `make demo` work on a fresh clone: they create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint lint-deploy typecheck pytest bench-smoke chaos-smoke demo bench chaos clean system-deps lock image-pin

# The runtime dependencies at the versions the image ships (requirements.lock, without
# its hashes: pip takes no hashes for an editable install), the dev tools at their latest.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	sed -e '/--hash=/d' -e 's/ \\$$//' requirements.lock > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt -e '.[dev]'
	touch $(STAMP)

# requirements.lock from [project.dependencies], with every file's hash (pip-tools).
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet pip-tools
	$(VENV)-lock/bin/pip-compile --quiet --generate-hashes --strip-extras --no-header \
		--no-emit-index-url --no-emit-find-links \
		--output-file $(VENV)-lock/requirements.txt pyproject.toml
	{ sed -n '1,3p' requirements.lock; cat $(VENV)-lock/requirements.txt; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# Pin the Dockerfile's base image to the digest python:3.11-slim has today (needs docker
# and Docker Hub); commit the change so that every build starts from the same bytes.
image-pin:
	digest=$$(docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}' | tr -d '"'); \
	test -n "$$digest" && sed -i "s|^ARG PYTHON_IMAGE=.*|ARG PYTHON_IMAGE=python:3.11-slim@$$digest|" Dockerfile

test: lint lint-deploy typecheck pytest bench-smoke chaos-smoke

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench

# Dockerfile (hadolint) and Kubernetes manifests (against the API schemas, strict);
# the systemd unit is checked by tests/test_packaging.py with systemd-analyze verify.
lint-deploy: $(STAMP) system-deps
	$(BIN)/hadolint Dockerfile
	find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml -print0 \
		| xargs -0 $(BIN)/kubernetes-validate --strict --quiet
	@if command -v kubectl >/dev/null 2>&1; then \
		for overlay in single ha; do \
			kubectl kustomize deploy/kubernetes/$$overlay > $(VENV)/kustomized-$$overlay.yaml \
			&& $(BIN)/kubernetes-validate --strict --quiet $(VENV)/kustomized-$$overlay.yaml || exit 1; \
		done; \
	else \
		echo "lint-deploy: no kubectl here: the overlays are resolved by tests/test_packaging.py only"; \
	fi
	promtool check rules deploy/prometheus/taskwarden-rules.yaml
	promtool test rules deploy/prometheus/taskwarden-rules.test.yaml

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests start a real PostgreSQL (Debian's binaries: initdb + pg_ctl in a temp dir) and
# a real Alertmanager (Debian's prometheus-alertmanager) on loopback; promtool (Debian's
# prometheus) checks and unit-tests the alerting rules on taskwarden itself; the status page
# is rendered by a real headless Chromium (Debian's chromium).
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

pytest: $(STAMP) system-deps
	$(BIN)/pytest

# The benchmarks are not timed tests; this only proves they still run (smallest sizes).
bench-smoke: $(STAMP) system-deps
	$(BIN)/python bench/poll_cycle.py --sizes 1000 --backend both
	$(BIN)/python bench/replicas.py --smoke
	$(BIN)/python bench/compare.py --sizes 1000 --transitions 20 --storm 200 --default-latency-groups 0
	$(BIN)/python bench/status_page.py --sizes 1000 --loads 2

# Hostile input and kill soak: the quick subset here, the full table with `make chaos`.
chaos-smoke: $(STAMP) system-deps
	$(BIN)/python bench/chaos.py --smoke

demo: $(STAMP)
	$(BIN)/taskwarden demo

# taskwarden against the naive cron poller: 1k / 10k / 100k tasks, latency (also with the
# shipped defaults), storm (~20 min); then SQLite against PostgreSQL, failover over 20
# kills, and 200 sources on 1 and 3 replicas (~25 min).
bench: $(STAMP) system-deps
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/status_page.py

# Every attack (hostile vendor answers, Slack outage, disk full, corruption, 1,100 idle
# connections, API down, 30 SIGKILLs under churn): one table, attack → held / broke.
chaos: $(STAMP) system-deps
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
