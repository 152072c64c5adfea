# A thin layer over the real commands; every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPEC ?= bench/specs/quick.toml
SWEEP ?= $(shell ls -td results/*/ 2>/dev/null | head -1)

.PHONY: install test lint bench report perf clean browser pgbouncer

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium renders the HTML report in the browser tests.
browser:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

# Debian's pgbouncer for the PgBouncer sweeps and tests (elsewhere: brew/dnf install pgbouncer).
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || bash scripts/install-pgbouncer.sh

test: install browser pgbouncer
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/poolbench sweep $(SPEC)

report: install
	$(VENV)/bin/poolbench report $(SWEEP)

# Speed and memory of the analysis on a synthetic 1,000-run table.
perf: install
	$(PY) scripts/bench_analysis.py

clean:
	rm -rf $(VENV) results build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
