# Every target builds or refreshes .venv itself, so each one works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo demo-peers bench chaos clean services

$(STAMP): pyproject.toml
	@echo "Installing sessionkeeper and its dependencies into $(VENV) (the first time: about a minute)..."
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

services:
	bash scripts/ensure-services.sh

test: $(STAMP)
	bash scripts/ensure-services.sh || true
	bash scripts/ensure-nats.sh || true
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/sessionkeeper demo

# The demo with no database: every session copied into another node's memory over NATS (on
# 127.0.0.1:4222, started in the background if nothing listens there). DEMO_ARGS for more options.
NATS_URL ?= nats://127.0.0.1:4222
demo-peers: $(STAMP)
	bash scripts/ensure-nats.sh --serve
	$(BIN)/sessionkeeper demo --replication $(NATS_URL) $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/pip install --quiet -r bench/requirements.txt
	bash scripts/ensure-wrk.sh || true
	$(BIN)/python -m bench

# Nodes on a private PostgreSQL behind a private nginx; SIGKILL, SIGTERM, PostgreSQL restart and a
# 30 s cut-off per policy; then nodes replicating over a private nats-server (no database, and
# time-based:60 on PostgreSQL), SIGKILL, SIGTERM and a NATS restart (about 6 minutes in all).
# Writes docs/chaos.md. CHAOS_ARGS="--short" for about 90 s.
chaos: $(STAMP)
	bash scripts/ensure-nginx.sh
	bash scripts/ensure-nats.sh
	$(BIN)/python -m tools.chaos --doc docs/chaos.md $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
