# The two commands of the README: `make demo` runs the example app, `make test` runs every check.
# Both create .venv on first use and reinstall the project when its metadata changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean

demo: $(VENV)/.installed
	$(BIN)/flask --app examples/app run --host 127.0.0.1 --port 5000

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy flask_bgjobs flask_sqlitelogs
	$(BIN)/pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_queue.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache examples/instance
