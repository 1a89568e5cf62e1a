# One venv for everything; `make test` and `make run` build it on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install test run lint bench
install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check rlm bot tests benchmarks
	$(VENV)/bin/mypy

run: $(STAMP)
	$(VENV)/bin/rlm-bot

bench: $(STAMP)
	$(PY) benchmarks/parallel_query.py
	$(PY) benchmarks/bot_load.py
	$(PY) benchmarks/sandbox.py
	$(PY) benchmarks/robustness.py
