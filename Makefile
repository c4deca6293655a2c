# Everything a fresh Debian 12 machine needs is installed by these targets themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PG_BIN ?= /usr/lib/postgresql/15/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup postgres demo test test-unit test-integration test-e2e bench docs clean

setup: $(STAMP) postgres

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null \
	  && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Debian packages: PostgreSQL 15 (no main cluster is created: pitrdrill runs its own), pgBackRest,
# and the zstd/lz4 tools for compressed WAL archives. Installed only when missing.
DEB_NEEDS := $(PG_BIN)/pg_ctl:postgresql-15 /usr/bin/pgbackrest:pgbackrest /usr/bin/zstd:zstd /usr/bin/lz4:lz4
postgres:
	@missing=""; for need in $(DEB_NEEDS); do [ -x "$${need%%:*}" ] || missing="$$missing $${need##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; \
	  mkdir -p /etc/postgresql-common; \
	  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
	    || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then useradd --system --home /var/lib/postgresql postgres; fi

demo: setup
	$(PY) -m workers.demo

test: setup
	$(PY) -m pytest -q tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

test-e2e: setup
	$(PY) -m pytest -q tests/e2e

docs: setup
	$(PY) -m domain.errors > docs/errors.md

clean:
	rm -rf var .pytest_cache

# Every pitrdrill figure beside its baseline, in one run (BENCH_SCALE=small: a smoke run;
# full, the default: 1 GiB backup and WAL, under 30 minutes). Writes bench/results/*.json.
bench: setup
	$(PY) -m bench.run
	$(PY) -m bench.index_scale
