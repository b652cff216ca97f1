# llm-usage-consumer: `make help` lists the targets. Everything runs from .venv, created on demand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The locks (`make lock` writes them, from pyproject.toml): the runtime dependencies (the image
# installs these) and the runtime plus the test extra (`make venv` installs these), every pin with
# its sha256 hashes. uv resolves them, for Python 3.11 on Linux x86_64 (glibc 2.36 or newer: this
# machine, CI, the image's base); it is needed only to refresh the locks, never to install them.
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
UV_VERSION := 0.13.9
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36

.DEFAULT_GOAL := help
.PHONY: help venv lock jars prometheus chromium run test chaos bench test-unit lint format schema dashboard broker-start broker-stop clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv: the locked dependencies (requirements-test.lock), then the project (editable)

# Hash-checked: every package at its locked version or no install. The project itself comes
# after, without dependencies (an editable install has no hash to check).
$(STAMP): pyproject.toml $(TEST_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

# The test lock first, then the runtime lock constrained by it, so both pin the same versions.
# A pin that still satisfies pyproject.toml stays (add a dependency, and only it and what it
# needs move); UPGRADE=1 re-resolves every pin to the newest allowed.
lock: ## refresh requirements.lock and requirements-test.lock from pyproject.toml (UPGRADE=1: newest allowed)
	@set -e; tool=$$(mktemp -d); trap 'rm -rf "$$tool"' EXIT; \
	$(PYTHON) -m venv "$$tool"; \
	"$$tool/bin/python" -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); \
	export UV_CUSTOM_COMPILE_COMMAND="make lock"; \
	"$$tool/bin/uv" pip compile --quiet pyproject.toml --extra test $(LOCK_FLAGS) \
		$(if $(UPGRADE),--upgrade) -o $(TEST_LOCK); \
	"$$tool/bin/uv" pip compile --quiet pyproject.toml -c $(TEST_LOCK) $(LOCK_FLAGS) \
		$(if $(UPGRADE),--upgrade) -o $(LOCK); \
	echo "locked: $$(grep -c '^[a-z0-9]' $(LOCK)) runtime packages in $(LOCK)," \
		"$$(grep -c '^[a-z0-9]' $(TEST_LOCK)) with the test extra in $(TEST_LOCK)"

jars: venv ## download the Kafka broker jars into the cache (first run only)
	$(BIN)/python -c "from consumer.devtools.broker import ensure_jars; print('broker jars:', ensure_jars())"

prometheus: ## install prometheus + promtool (Debian's package) when missing; no daemon left running
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then \
		echo "prometheus: already installed ($$(promtool --version 2>&1 | head -1))"; \
	else \
		set -e; \
		command -v apt-get >/dev/null || { echo "no apt-get: install Prometheus >= 2.42 so prometheus and promtool are on PATH"; exit 1; }; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		policy=/usr/sbin/policy-rc.d; added=; \
		if [ ! -e $$policy ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$policy >/dev/null; \
			$$SUDO chmod 755 $$policy; added=1; \
		fi; \
		trap '[ -z "$$added" ] || $$SUDO rm -f '"$$policy" EXIT; \
		$$SUDO apt-get update -qq; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus; \
		if [ -d /run/systemd/system ]; then \
			$$SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true; \
		fi; \
		echo "prometheus: installed ($$(promtool --version 2>&1 | head -1))"; \
	fi

chromium: ## install Debian's chromium (the status page's browser test) when missing
	@if [ -x /usr/bin/chromium ]; then \
		echo "chromium: already installed ($$(/usr/bin/chromium --version 2>/dev/null | head -1))"; \
	else \
		set -e; \
		command -v apt-get >/dev/null || { echo "no apt-get: install Chromium so /usr/bin/chromium exists"; exit 1; }; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
		echo "chromium: installed ($$(/usr/bin/chromium --version 2>/dev/null | head -1))"; \
	fi

run: venv jars ## the demo: local broker, demo producer and worker; Ctrl-C stops all
	$(BIN)/usage-consumer demo

test: venv jars prometheus chromium lint ## the whole suite, integration tests on a real local broker included
	$(BIN)/pytest

chaos: venv jars ## the fault suite's long soak; figures to docs/chaos-results.{md,json}
	USAGE_CONSUMER_CHAOS_PROFILE=soak USAGE_CONSUMER_CHAOS_REPORT=docs/chaos-results \
		$(BIN)/pytest -m faults tests/test_faults.py

bench: venv jars ## benchmarks (BENCH_EVENTS, BENCH_REPS) to bench/results and docs/benchmarks.md
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run

test-unit: venv prometheus ## only the tests that need no broker
	$(BIN)/pytest -m "not integration"

lint: venv ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: venv ## regenerate schemas/usage_event.v1.schema.json from the model
	$(BIN)/python -m schemas > schemas/usage_event.v1.schema.json

dashboard: venv ## regenerate the Grafana dashboards (llm-usage.json, llm-usage-genai.json) from deploy/grafana/dashboard.py
	$(BIN)/python deploy/grafana/dashboard.py

broker-start: venv jars ## start the local broker in .local/kafka and print its address
	$(BIN)/usage-consumer broker start

broker-stop: venv ## stop the local broker
	$(BIN)/usage-consumer broker stop

clean: ## stop the local broker, remove the venvs and local data (the jar cache stays)
	-test -x $(BIN)/usage-consumer && $(BIN)/usage-consumer broker stop
	rm -rf $(VENV) bench/.venv-quix .local .pytest_cache .mypy_cache .ruff_cache
