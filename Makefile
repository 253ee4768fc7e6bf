# AccessGov — the two commands: `make run` (the product on this machine) and `make test` (the suite).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test install lint check clean screenshot bench bench-install

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "AccessGov needs Python 3.11 or newer (python3.11+ on PATH)."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## The whole product on one machine: SQLite, an embedded broker, web + worker + beat, demo data.
run: install
	@scripts/run

## The whole test suite. Service-backed tests skip with a reason unless REQUIRE_SERVICES=1.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -c pyproject.toml -r accessgov portal accessgov_cli --severity-level high -q
	$(BIN)/python scripts/secret_scan.py
	@# Layer contracts (pyproject [tool.importlinter]) and types (mypy + django-stubs on accessgov/).
	DEBUG=1 $(BIN)/lint-imports --no-cache
	DEBUG=1 $(BIN)/mypy

check: install
	DEBUG=1 $(BIN)/python manage.py check
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
	@# Production-shaped settings (DEBUG off, a real key, a real host name): no deploy warning at all.
	DEBUG=0 SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  ALLOWED_HOSTS=accessgov.example.com VAR_DIR=var/check-deploy \
	  DATABASE_URL=sqlite:///$(CURDIR)/var/check-deploy/db.sqlite3 \
	  $(BIN)/python manage.py check --deploy --fail-level WARNING

screenshot: install
	$(BIN)/python scripts/screenshot.py

clean:
	rm -rf $(VENV) var

## Benchmarks (need PostgreSQL and Redis on 127.0.0.1, like CI); they rewrite docs/PERFORMANCE.md.
## One per performance target in ../shared/QUALITY.md; about 30 minutes in all, in the foreground.
## They run on a Python built like the image's (python:3.11-slim: profile-guided and link-time optimised), in a
## venv of their own: pyenv's default build is neither and costs ≈ 10 % more CPU on the pages here. A Linux
## distribution's Python is built that way (Debian: apt-get install python3.11-venv); BENCH_PYTHON= (empty)
## benchmarks the development venv instead. Each section says which interpreter measured it.
BENCH_PYTHON ?= $(shell for p in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do test -x $$p && $$p -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
BENCH_BIN := $(if $(BENCH_PYTHON),var/bench-venv/bin,$(BIN))

bench-install: install
ifneq ($(BENCH_PYTHON),)
	@test -x $(BENCH_BIN)/python || $(BENCH_PYTHON) -m venv var/bench-venv
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/python -m pip install --quiet --quiet -e ".[dev]"
else
	@echo "No distribution-built Python 3.11+ with venv found: benchmarking the development venv (docs/PERFORMANCE.md)."
endif

bench: bench-install
	$(BENCH_BIN)/python bench/revocation_lag.py --spread 10 --section revocation_lag
	$(BENCH_BIN)/python bench/revocation_lag.py --spread 0 --section revocation_lag_burst
	$(BENCH_BIN)/python bench/revocation_lag.py --redis-outage 60 --section revocation_lag_outage
	$(BENCH_BIN)/python bench/million_grants.py
	$(BENCH_BIN)/python bench/leaver_lag.py
	$(BENCH_BIN)/python bench/export_1m.py
	$(BENCH_BIN)/python bench/expiry_sweep.py
	$(BENCH_BIN)/python bench/seed_scale.py --reset
	$(BENCH_BIN)/python bench/time_to_access.py
	$(BENCH_BIN)/python bench/report_pages.py
	$(BENCH_BIN)/python bench/auditor_states.py --rounds 2
	$(BENCH_BIN)/python bench/page_floor.py
	$(BENCH_BIN)/python bench/evidence_pack.py
	$(BENCH_BIN)/python bench/load_test.py
	$(BENCH_BIN)/python bench/activity_ingest.py
	$(BENCH_BIN)/python bench/activity_sampler.py
