# The two commands of the README: `make demo` runs the example app, `make test` runs every check.
# Both create .venv on first use and reinstall the project when its metadata changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench bench-tools clean chromium

demo: $(VENV)/.installed
	$(BIN)/flask --app examples/app run --host 127.0.0.1 --port 5000

test: $(VENV)/.installed-test chromium
	$(BIN)/ruff check .
	$(BIN)/mypy flask_bgjobs flask_sqlitelogs
	$(BIN)/pytest

# Every script runs even if one before it fails; make fails at the end if any did. About 8 to
# 10 minutes on 2 cores. bench_peers.py rewrites its part of docs/benchmarks.md and its charts.
bench: $(VENV)/.installed-bench bench-tools
	@status=0; \
	$(BIN)/python bench/bench_engine.py || status=1; \
	$(BIN)/python bench/bench_queue.py --rounds 3 || status=1; \
	$(BIN)/python bench/bench_requestlogs.py --rounds 3 --skip-server || status=1; \
	$(BIN)/python bench/bench_peers.py --write-docs || status=1; \
	exit $$status

# The peers' servers: Debian's redis-server (for RQ) and wrk (the load generator), installed
# with apt-get when run as root; without them bench_peers.py reports those parts as SKIPPED.
bench-tools:
	@for tool in redis-server wrk; do \
	  command -v $$tool >/dev/null 2>&1 && continue; \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's $$tool for bench/bench_peers.py"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$tool >/dev/null; } \
	      || echo "could not install $$tool: bench/bench_peers.py skips what needs it"; \
	  else \
	    echo "no $$tool (sudo apt-get install $$tool): bench/bench_peers.py skips what needs it"; \
	  fi; \
	done

# The browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the browser tests need Debian's chromium: sudo apt-get install chromium"; exit 1; \
	  fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable '.[bench]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache examples/instance
