# ChannelShift developer commands. `make demo` and `make test` work on a fresh machine
# with Python 3.11+ (and, for the PostgreSQL half of the tests, a server at 127.0.0.1:5432).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
CHROMIUM ?= /usr/bin/chromium

.PHONY: install demo test lint test-sqlite test-postgresql chromium

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/channelshift demo

# The UI browser tests drive Debian's Chromium through Playwright (no browser download).
# Installed here when missing if we are root (as CI is); otherwise, or if the install
# fails, the run stops with the command to type: the browser tests are never skipped.
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "== installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null || { echo "error: apt-get could not install chromium" >&2; exit 1; }; \
		[ -x "$(CHROMIUM)" ] || { echo "error: chromium installed but $(CHROMIUM) is missing" >&2; \
			exit 1; }; \
	else \
		echo "error: $(CHROMIUM) is missing; install Debian's chromium first:" \
			"sudo apt-get install chromium" >&2; \
		exit 1; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test-sqlite: install chromium
	@echo "== tests on SQLite"
	CHANNELSHIFT_TEST_DATABASE_URL=sqlite $(BIN)/pytest -m "not postgres_only"

test-postgresql: install chromium
	@echo "== tests on PostgreSQL ($(PG_URL), fresh schema per run)"
	CHANNELSHIFT_TEST_DATABASE_URL=$(PG_URL) $(BIN)/pytest

test: lint test-sqlite test-postgresql
