# jobrunbook: `make demo` and `make test` are the only set-up commands.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
CONDA := $(shell command -v conda 2>/dev/null)
ARGS ?=

.PHONY: help setup demo test test-dates lint bench proto clean

## help: list the targets
help:
	@awk 'BEGIN {FS=":"} /^## / {sub(/^## /, ""); split($$0, a, ": "); printf "  \033[1m%-8s\033[0m %s\n", a[1], substr($$0, length(a[1]) + 3)}' $(MAKEFILE_LIST)

$(VENV)/.stamp: pyproject.toml environment.yml
ifdef CONDA
	conda env create --yes -p $(VENV) -f environment.yml
else
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
endif
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

## setup: create the environment (conda if present, else a venv) and the Debian packages the tests need
setup: $(VENV)/.stamp
	@bash scripts/system-deps.sh

## demo: stand up a live simulated incident and run the runbook against it (ARGS="--scenario mixed --once")
demo: setup
	$(VENV)/bin/jobrunbook demo $(ARGS)

## test: run the test suite against real redis-server, Postgres, Prometheus and Chromium
test: setup
	$(PY) -m pytest $(ARGS)

## test-dates: the date-sensitive tests (marker dates) under faketime, 10 s before and 10 s after the next month begins
# (the monotonic clock stays real: libfaketime hangs Python's timed waits otherwise; tests/bin/realclock has the
# redis-server and time.sleep that work under it). The clock is the real one plus a fixed offset, so every
# process (kernels forked from the fork server too) reads the same time without sharing libfaketime's start
# through its shared memory, and the multi-threaded libfaketime (-m): kernels and the run have threads.
test-dates: setup
	@next=$$(date -u -d "$$(date -u +%Y-%m-01) +1 month" +%Y-%m-%d); \
	for t in "$$(date -u -d "$$next 00:00:00 UTC -10 sec" '+%Y-%m-%d %H:%M:%S')" "$$next 00:00:10"; do \
	  echo "test-dates: at $$t UTC"; \
	  offset=$$(( $$(date -u -d "$$t UTC" +%s) - $$(date -u +%s) )); \
	  PATH="$(CURDIR)/tests/bin/realclock:$$PATH" PYTHONPATH="$(CURDIR)/tests/bin/realclock" \
	  TZ=UTC FAKETIME_DONT_FAKE_MONOTONIC=1 \
	    faketime -m -f "+$${offset}s" $(PY) -m pytest -m dates $(ARGS) || exit 1; \
	done

## lint: ruff over the lib and the tests
lint: setup
	$(VENV)/bin/ruff check lib tests benchmarks notebooks

## bench: benchmarks, reported as ratios against a floor measured in the same run
bench: setup
	$(PY) benchmarks/run.py $(ARGS)

## proto: regenerate lib/jobrunbook/asynq/asynq_pb2.py from asynq.proto
proto: setup
	$(PY) -m grpc_tools.protoc -I lib/jobrunbook/asynq -I $$($(PY) -c "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), \"_proto\"))") --python_out=lib/jobrunbook/asynq lib/jobrunbook/asynq/asynq.proto

## clean: remove the environment, caches and run outputs
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis test-artifacts
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
