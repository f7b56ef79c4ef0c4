# ChannelShift developer commands. `make demo` and `make test` work on a fresh machine
# with Python 3.11+ (and, for the PostgreSQL half of the tests, a server at 127.0.0.1:5432).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: install demo test lint test-sqlite test-postgresql

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/channelshift demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test-sqlite: install
	@echo "== tests on SQLite"
	CHANNELSHIFT_TEST_DATABASE_URL=sqlite $(BIN)/pytest -m "not postgres_only"

test-postgresql: install
	@echo "== tests on PostgreSQL ($(PG_URL), fresh schema per run)"
	CHANNELSHIFT_TEST_DATABASE_URL=$(PG_URL) $(BIN)/pytest

test: lint test-sqlite test-postgresql
