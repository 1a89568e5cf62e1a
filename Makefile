# One venv, two installs: `make run` puts in only what the app needs, `make test` (and
# `make lint`) the test extra as well. Each is redone when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.installed-app
TEST_STAMP := $(VENV)/.installed-test
# The PostgreSQL server `make test-postgres` makes its per-test databases on.
TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(APP_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(APP_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

.PHONY: install test test-sqlite test-postgres run lint bench
install: $(TEST_STAMP)

# The suite on SQLite, then again on PostgreSQL.
test: test-sqlite test-postgres

test-sqlite: $(TEST_STAMP)
	env -u TEST_DATABASE_URL -u DATABASE_URL $(PY) -m pytest -q

# The whole suite again, every test that stores anything on a fresh database of its own on
# that server (tests/databases.py). RLM_TEST_DATABASE_ONLY=1 keeps only those tests.
test-postgres: $(TEST_STAMP)
	TEST_DATABASE_URL=$(TEST_POSTGRES_URL) $(PY) -m pytest -q

# ruff, mypy --strict on the engine, and the import contracts in pyproject.toml.
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check rlm bot migrations tests benchmarks scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

run: $(APP_STAMP)
	$(VENV)/bin/rlm-bot

bench: $(TEST_STAMP)
	$(PY) benchmarks/parallel_query.py
	$(PY) benchmarks/bot_load.py
	$(PY) benchmarks/endpoint_flood.py
	$(PY) benchmarks/sandbox.py
	$(PY) benchmarks/robustness.py
