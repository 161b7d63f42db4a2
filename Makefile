# The two commands of the README: `make demo` runs the example app, `make test` runs every check.
# Both create .venv on first use and reinstall the project when its metadata changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean chromium

demo: $(VENV)/.installed
	$(BIN)/flask --app examples/app run --host 127.0.0.1 --port 5000

test: $(VENV)/.installed-test chromium
	$(BIN)/ruff check .
	$(BIN)/mypy flask_bgjobs flask_sqlitelogs
	$(BIN)/pytest

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_queue.py
	$(BIN)/python bench/bench_requestlogs.py

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
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || echo "no wrk: bench_requestlogs uses its own load generator"
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache examples/instance
