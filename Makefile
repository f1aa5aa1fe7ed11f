# trading_assets: `make run` (the main job, offline) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export TRADING_DATA_DIR ?= $(CURDIR)/.trading_data
export YF_DISABLE_CURL_CFFI ?= 1

.PHONY: install run run-aws synth dev test bench lint clean home

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

home:
	@mkdir -p $(DAGSTER_HOME) $(TRADING_DATA_DIR)
	@cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

run: install home
	$(PY) -m trading_assets run

# The main job in TRADING_ENV=aws against a moto server on 127.0.0.1 (offline, no credentials):
# bootstraps the tables, bucket, queue, topic and secret with the production code, runs the
# flow, prints where the results are.
run-aws: install home
	$(PY) -m trading_assets run-aws

# The production CDK stack synthesised offline to deploy/cdk.out, then cfn-lint at error level.
synth: install
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(PY) deploy/synth.py

# The whole local stack: the TradingView webhook gateway (http://127.0.0.1:8000, options in
# GATEWAY_ARGS, e.g. make dev GATEWAY_ARGS="--port 8001") in the background, and `dg dev`
# (what `dagster dev` now recommends: webserver + daemon) in the foreground. Ctrl-C stops
# all three: the trap stops the gateway and the alert workers (which run each stored alert at
# once; WORKER_ARGS, default --processes 2: two symbols' alerts side by side) whichever way
# dg dev ends. The price stream (`python -m trading_assets stream`: TRADING_KNN_EPICS into
# 1-minute bars under TRADING_DATA_DIR/stream; the replay stream offline, options in
# STREAM_ARGS, e.g. make dev STREAM_ARGS="--day 2025-11-18 --speed 60") runs beside them
# and is stopped by the same trap.
WORKER_ARGS ?= --processes 2
STREAM_ARGS ?=
dev: install home
	@# create the instance's storage once, before the webserver, daemon and workers open it at once
	@$(PY) -c "import dagster; dagster.DagsterInstance.get().dispose()"
	@trap 'kill -TERM $$gateway $$worker $$stream 2>/dev/null; wait $$gateway $$worker $$stream 2>/dev/null' EXIT; \
	trap 'exit 130' INT; trap 'exit 143' TERM; \
	$(PY) -m trading_assets gateway $(GATEWAY_ARGS) & gateway=$$!; \
	$(PY) -m trading_assets worker $(WORKER_ARGS) & worker=$$!; \
	$(PY) -m trading_assets stream $(STREAM_ARGS) & stream=$$!; \
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dg dev

test: install home
	$(VENV)/bin/ruff check trading_assets trading_assets_tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dg check defs
	$(VENV)/bin/pytest

$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed home
	$(PY) benchmarks/run_all.py

lint: install
	$(VENV)/bin/ruff check trading_assets trading_assets_tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(DAGSTER_HOME) $(TRADING_DATA_DIR) .pytest_cache
