# One venv for everything; `make test` and `make run` build it on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The PostgreSQL server `make test-postgres` makes its per-test databases on.
TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install test test-sqlite test-postgres run lint bench
install: $(STAMP)

# The suite on SQLite, then again on PostgreSQL.
test: test-sqlite test-postgres

test-sqlite: $(STAMP)
	env -u TEST_DATABASE_URL -u DATABASE_URL $(PY) -m pytest -q

# The whole suite again, every test that stores anything on a fresh database of its own on
# that server (tests/databases.py). RLM_TEST_DATABASE_ONLY=1 keeps only those tests.
test-postgres: $(STAMP)
	TEST_DATABASE_URL=$(TEST_POSTGRES_URL) $(PY) -m pytest -q

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
