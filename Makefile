# A thin layer over the real commands; every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPEC ?= quick
SWEEP ?= $(shell ls -td results/*/ 2>/dev/null | head -1)

.PHONY: install test lint bench report perf clean browser pgbouncer

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[bench,test]'
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

# Every figure of docs/PERFORMANCE.md, one benchmark after another (about 40 minutes on 2
# cores; each prints its Markdown table). One of them: make perf PERF=benchmarks/noise.py
PERF ?= benchmarks/analysis.py benchmarks/app_cpu.py benchmarks/locust_capacity.py \
	benchmarks/littles_law.py benchmarks/noise.py benchmarks/search.py benchmarks/latency_memory.py
perf: install
	@for bench in $(PERF); do echo "== $$bench"; $(PY) $$bench || exit 1; echo; done

clean:
	rm -rf $(VENV) results build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
