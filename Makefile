# Everything a fresh Debian 12 machine needs is installed by these targets themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PG_BIN ?= /usr/lib/postgresql/15/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup postgres demo test test-unit test-integration test-e2e test-docker bench docs clean \
	images images-base images-sandbox images-primary images-temporal images-worker docker-tools

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
DEB_NEEDS := $(PG_BIN)/pg_ctl:postgresql-15 /usr/bin/pgbackrest:pgbackrest /usr/bin/zstd:zstd /usr/bin/lz4:lz4 /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver
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

# tests/docker needs the images (`make test-docker`): not part of the default run.
test: setup
	$(PY) -m pytest -q tests --ignore=tests/docker

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup
	$(PY) -m pytest -q tests/integration

test-e2e: setup
	$(PY) -m pytest -q tests/e2e

# tests/docker: the docker sandbox provider on pitrdrill/sandbox:15, and the compose stack
# (docker-compose.yml) up, a real drill through it, down -v. Builds the images first.
test-docker: setup docker-tools images
	PITRDRILL_REQUIRE_DOCKER=1 $(PY) -m pytest -q tests/docker

docs: setup
	$(PY) -m domain.errors > docs/errors.md
	$(PY) -m domain.report_schema > docs/report.schema.json

clean:
	rm -rf var .pytest_cache

# Every pitrdrill figure beside its baseline, in one run (BENCH_SCALE=small: a smoke run;
# full, the default: 1 GiB backup and WAL, under 30 minutes). Writes bench/results/*.json.
bench: setup
	$(PY) -m bench.run
	$(PY) -m bench.index_scale
	$(PY) -m bench.bisect

# --- Images (deploy/README.md): every one built here, none pulled (no registry is reachable).
# pitrdrill/debian:12 is a debootstrap rootfs (deploy/base-image.sh); the others are built FROM
# it (deploy/build-image.sh). Each is skipped while its recipe is unchanged: warm, this is ~1 s.
IMAGES_DIR := var/images
# The host's postgres uid/gid: the sandbox's data directory is bind-mounted from the host.
PG_UID = $(shell id -u postgres 2>/dev/null || echo 999)
PG_GID = $(shell id -g postgres 2>/dev/null || echo 999)
PG_IDS = --build-arg PG_UID=$(PG_UID) --build-arg PG_GID=$(PG_GID)

images:
	@$(MAKE) --no-print-directory -j3 images-primary images-temporal images-worker

docker-tools:
	@command -v docker >/dev/null || { echo "no docker CLI: install Docker Engine (Debian: docker.io)"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "the Docker daemon is not reachable (docker info)"; exit 1; }
	@command -v docker-compose >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "missing docker-compose (run: sudo apt-get install docker-compose)"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }

images-base: docker-tools
	@deploy/base-image.sh pitrdrill/debian:12

images-sandbox: images-base
	@mkdir -p $(IMAGES_DIR)/sandbox
	@deploy/build-image.sh pitrdrill/sandbox:15 deploy/sandbox.Dockerfile $(IMAGES_DIR)/sandbox $(PG_IDS)

images-primary: images-sandbox
	@mkdir -p $(IMAGES_DIR)/primary && cp -p deploy/primary-entrypoint.sh $(IMAGES_DIR)/primary/
	@deploy/build-image.sh pitrdrill/primary deploy/primary.Dockerfile $(IMAGES_DIR)/primary

images-temporal: images-base $(STAMP)
	@mkdir -p $(IMAGES_DIR)/temporal
	@cmp -s $(VENV)/bin/temporal $(IMAGES_DIR)/temporal/temporal || cp -p $(VENV)/bin/temporal $(IMAGES_DIR)/temporal/
	@deploy/build-image.sh pitrdrill/temporal deploy/temporal.Dockerfile $(IMAGES_DIR)/temporal

images-worker: images-base $(STAMP)
	@deploy/worker-context.sh $(IMAGES_DIR)/worker $(PY)
	@deploy/build-image.sh pitrdrill/worker deploy/Dockerfile $(IMAGES_DIR)/worker $(PG_IDS)
