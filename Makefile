# Two entry points for a fresh Debian machine (run as root or with sudo available):
#   make demo   installs redis-server, a virtualenv and celeryctl, starts a local lab, runs
#               celeryctl against it
#   make test   installs everything and runs the whole test suite against real servers
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The lab lives where every `celeryctl lab` command looks from this checkout (docs/lab.md):
# $CELERYCTL_LAB_DIR if set, else ./.lab.

.PHONY: demo test deps deps-demo venv _venv lab-venvs lint bench clean lab-down

deps:
	@bash scripts/install-deps.sh

deps-demo:
	@bash scripts/install-deps.sh demo

venv: deps _venv

_venv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q '.[dev]'

demo: deps-demo _venv
	@VENV=$(VENV) bash scripts/demo.sh

lab-venvs: venv
	$(BIN)/celeryctl lab venvs

lab-down:
	@$(BIN)/celeryctl lab down || true

test: venv
	$(BIN)/ruff check celeryctl tests benchmarks
	@# the older-Celery virtualenvs the mixed-version tests run workers from (about 15 s
	@# from PyPI, reused when present)
	$(BIN)/celeryctl lab venvs
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: venv
	$(BIN)/ruff check celeryctl tests benchmarks

bench: venv
	$(BIN)/python benchmarks/bench_help.py
	$(BIN)/python benchmarks/bench_workers.py
	$(BIN)/python benchmarks/bench_purge.py --broker redis
	$(BIN)/python benchmarks/bench_purge.py --broker rabbitmq
	$(BIN)/python benchmarks/bench_watch.py --broker redis --queues 1000
	$(BIN)/python benchmarks/bench_watch.py --broker rabbitmq --queues 1000

clean: lab-down
	rm -rf $(VENV) .lab *.egg-info
