# shopkata: every command a developer or CI needs. `make help` lists them.
# The first target that needs Python creates .venv from uv.lock; nothing is installed by hand.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# The stamp names what the venv was built from: the lock, the project and how it is synced.
SYNC_FLAGS := --frozen --compile-bytecode
STAMP := $(VENV)/.synced-$(shell (cat uv.lock pyproject.toml; echo $(SYNC_FLAGS)) 2>/dev/null | cksum | cut -d' ' -f1)

HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Local development defaults (the README lists them); real deployments set their own. The
# password is for loopback only: a server listening elsewhere refuses it.
export IDENTITY_BOOTSTRAP_ADMIN_EMAIL ?= admin@shopkata.local
export IDENTITY_BOOTSTRAP_ADMIN_PASSWORD ?= shopkata-admin

.DEFAULT_GOAL := help
.PHONY: help install keys migrate seed up-monolith test test-postgres pytest lint format \
	typecheck importlint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): | $(UV)
	@# --compile-bytecode: every process (each service, migration, test subprocess) imports
	@# the whole stack; without .pyc files, or where PYTHONDONTWRITEBYTECODE is set, each one
	@# compiles FastAPI, SQLAlchemy and pydantic from source again (about 3 s against 1 s).
	$(UV) sync $(SYNC_FLAGS) --python $(PYTHON)
	rm -f $(VENV)/.synced-*
	touch $@

install: $(STAMP) ## Create .venv from uv.lock (done by every target that needs it)

keys: $(STAMP) ## Create the JWT signing key (var/keys/) if missing
	$(BIN)/python -m monolith keygen

migrate: $(STAMP) ## Apply every context's migrations to DATABASE_URL (default var/shop.db)
	@mkdir -p var
	$(BIN)/python -m monolith migrate

seed: keys migrate ## Load the demo catalog (1,000 products, 20 categories, stock) and the admin
	$(BIN)/python -m monolith seed --if-empty

# RUNTIME=compose runs up-monolith / up-services in containers with PostgreSQL instead
# (docker-compose.yml, docs/containers.md); native processes stay the default.
RUNTIME ?= native
COMPOSE ?= docker compose
comma := ,
compose_runtime = $(filter compose,$(RUNTIME))
# Compose takes its secrets from .env (docs/containers.md): the Makefile's development
# password must not reach it, and would win over .env if it did.
COMPOSE_ENV = $(if $(filter file,$(origin IDENTITY_BOOTSTRAP_ADMIN_PASSWORD)),env -u IDENTITY_BOOTSTRAP_ADMIN_PASSWORD)
ifeq ($(filter native compose,$(RUNTIME)),)
$(error RUNTIME must be native or compose, not "$(RUNTIME)")
endif

up-monolith: $(if $(compose_runtime),,seed) ## Serve the modular monolith on http://127.0.0.1:8000 (docs at /docs)
ifeq ($(RUNTIME),compose)
	PORT=$(PORT) WORKERS=$(WORKERS) $(COMPOSE_ENV) $(COMPOSE) --profile monolith up --build
else
	@echo "shopkata monolith: http://$(HOST):$(PORT)  docs: http://$(HOST):$(PORT)/docs"
	@echo "admin: $(IDENTITY_BOOTSTRAP_ADMIN_EMAIL) / $(IDENTITY_BOOTSTRAP_ADMIN_PASSWORD)"
	$(BIN)/python -m monolith serve --host $(HOST) --port $(PORT) --workers $(WORKERS)
endif

# Native processes, no Docker (launcher/, README "make up-services"). The control targets act
# on the running `make up-services` through its socket, var/run/launcher-<topology>.sock.
TOPOLOGY ?= topologies/services.toml
REPLICAS ?=
DATABASE ?=
PORT_OFFSET ?=
SERVICE ?=
# The control targets find `make up-services` by its topology, `make up STEP=n` by STEP.
LAUNCHER_RUN = $(if $(STEP),--data kata,--topology $(TOPOLOGY))
.PHONY: up-services services-status services-stop services-start services-restart services-down

up-services: $(if $(compose_runtime),,keys) ## Every service + the gateway on :8000 (REPLICAS="catalog=2" DATABASE=postgres)
ifeq ($(RUNTIME),compose)
	PORT=$(PORT) $(COMPOSE_ENV) $(COMPOSE) --profile services up --build \
		$(foreach item,$(subst $(comma), ,$(REPLICAS)),--scale $(item))
else
	$(BIN)/python -m launcher up --topology $(TOPOLOGY) --port $(PORT) \
		$(if $(REPLICAS),--replicas "$(REPLICAS)") $(if $(DATABASE),--database "$(DATABASE)") \
		$(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET))
endif

services-status: $(STAMP) ## Processes of the running up-services: name, URL, pid, state
	$(BIN)/python -m launcher status $(LAUNCHER_RUN)

services-stop: $(STAMP) ## Stop one service of up-services, the rest keep running (SERVICE=inventory)
	$(BIN)/python -m launcher stop "$(SERVICE)" $(LAUNCHER_RUN)

services-start: $(STAMP) ## Start a stopped service of up-services again (SERVICE=inventory)
	$(BIN)/python -m launcher start "$(SERVICE)" $(LAUNCHER_RUN)

services-restart: $(STAMP) ## Restart one service of up-services and wait until ready (SERVICE=...)
	$(BIN)/python -m launcher restart "$(SERVICE)" $(LAUNCHER_RUN)

services-down: $(STAMP) ## Stop every process of up-services (like Ctrl-C in its terminal)
	$(BIN)/python -m launcher down $(LAUNCHER_RUN)

# The kata (docs/kata/): step 0 the monolith alone ... step 7 the services, with events
# between them. Every step runs
# natively on :8000 on the same data (var/kata/, or shopkata_kata_<service> on PostgreSQL),
# so the rows a step's context left the monolith with are moved, verified, before it starts.
STEP ?=
KATA_DATA_DIR ?= var/kata
.PHONY: up kata-steps kata-migrate-data kata-branches kata-verify

up: keys ## Run kata step STEP=0..7 on :8000, moving its data first (DATABASE=postgres)
	$(BIN)/python -m kata up --step "$(STEP)" --port $(PORT) \
		$(if $(DATABASE),--database "$(DATABASE)") $(if $(REPLICAS),--replicas "$(REPLICAS)")

kata-steps: $(STAMP) ## List the kata's steps, their branches and topologies
	$(BIN)/python -m kata steps

kata-migrate-data: $(STAMP) ## Move step STEP's contexts' rows to their services, or build step 7's read models (REVERSE=1 moves rows back)
	$(BIN)/python -m kata migrate-data --step "$(STEP)" $(if $(DATABASE),--database "$(DATABASE)") \
		$(if $(REVERSE),--reverse) $(if $(REPLACE),--replace)

kata-branches: $(STAMP) ## Create the local branches kata/00-monolith ... kata/07-events from HEAD
	$(BIN)/python -m kata branches $(if $(FORCE),--force)

kata-verify: $(STAMP) ## Check every kata branch: imports resolve, the step's contract suite passes (minutes)
	$(BIN)/python -m kata branches --verify

# Benchmarks and load tests (docs/benchmarks.md). Native processes on 127.0.0.1, scratch
# databases under bench/results/, ports away from :8000.
USERS ?= 20
SPAWN_RATE ?= 5
RUN_TIME ?= 60s
UI ?=
# HOST may be a whole URL (HOST=http://10.0.0.5:8000) or a host name with PORT.
LOADTEST_HOST = $(if $(findstring ://,$(HOST)),$(HOST),http://$(HOST):$(PORT))
# WORKERS given on the command line (or environment) runs Locust as a master with n workers.
LOADTEST_WORKERS = $(if $(filter command line environment,$(origin WORKERS)),$(WORKERS),0)
.PHONY: bench bench-quick bench-kata bench-outage bench-costs profile loadtest loadtest-smoke

bench: $(STAMP) ## Full benchmark, monolith vs services: bench/results/<timestamp>/report.md
	$(BIN)/python -m bench

bench-quick: $(STAMP) ## Short benchmark for CI and demos (under 3 minutes)
	$(BIN)/python -m bench --quick

profile: $(STAMP) ## bench-quick plus a py-spy flame graph (SVG) of every server process: <results>/profiles/
	$(BIN)/python -m bench --quick --profile

bench-kata: $(STAMP) ## Every kata step on a short ladder, side by side (about 4 minutes)
	$(BIN)/python -m bench --quick --kata --only-steps

bench-outage: $(STAMP) ## A burst of checkouts meeting a restart, monolith vs services (BEFORE=dir: another checkout too)
	$(BIN)/python -m bench.outage $(if $(BEFORE),--before "$(BEFORE)")

bench-costs: $(STAMP) ## Server CPU per kind of shopper request, monolith vs services, and the mix's difference by task (about 4 minutes)
	$(BIN)/python -m bench.costs

loadtest: $(STAMP) ## Locust shopper against HOST (URL); UI=1 web UI, WORKERS=n distributed
	$(BIN)/python -m bench.loadtest --host "$(LOADTEST_HOST)" --users $(USERS) \
		--spawn-rate $(SPAWN_RATE) --time $(RUN_TIME) --workers $(LOADTEST_WORKERS) $(if $(UI),--ui)

loadtest-smoke: $(STAMP) ## CI smoke: short Locust run on monolith and services, fails on any error
	$(BIN)/python -m bench.loadtest --smoke

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy .

importlint: $(STAMP) ## import-linter: contexts independent, kernel and contract suite clean
	$(BIN)/lint-imports

# The contract suite runs once per in-process topology: the monolith (kata step 0, the first
# run's default target) and the services (step 7); `make kata-verify` runs it against
# every step on that step's own tree. On PostgreSQL, step 4 stands for the intermediate steps
# (they differ in bindings, not SQL). A kata branch runs the targets its topologies allow.
CONTRACT_TARGETS ?= $(if $(wildcard topologies/services.toml),tests.targets:services)
PG_CONTRACT_TARGETS ?= $(if $(wildcard topologies/kata-04-*.toml),tests.targets:step_4) \
	$(CONTRACT_TARGETS)

# Test files are spread over one pytest-xdist worker per core (at most 4; a file stays on one
# worker, so its module fixtures are built once; the tests that run whole topologies as
# processes share one worker, tests/conftest.py). PYTEST_JOBS=0 runs everything in one process,
# as test-postgres does: two workers' topologies together exceed the server's 100 connections.
PYTEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 4 ] && n=4; echo $$n)

# The project's own modules compiled ahead too (only changed files are recompiled): the tests
# start hundreds of processes, and PYTHONDONTWRITEBYTECODE would make each compile them again.
PROJECT_PACKAGES := shop services gateway monolith bindings launcher kata bench loadtests tests

pytest: $(STAMP) ## Every test tier on SQLite, the contract suite against every topology
	@$(BIN)/python -m compileall -q -j 0 $(wildcard $(PROJECT_PACKAGES)) >/dev/null
	$(BIN)/pytest -q -n $(PYTEST_JOBS) --dist loadgroup $(PYTEST_ARGS)
	@for target in $(CONTRACT_TARGETS); do \
		echo "contract suite against $$target"; \
		$(BIN)/pytest -q -p no:cacheprovider tests/contract --target $$target || exit 1; \
	done

test: lint typecheck importlint pytest ## Everything: lint, types, boundaries, all tests (SQLite)

test-postgres: ## Every test tier against the PostgreSQL server at PG_URL
	TEST_DATABASE_URL=$(PG_URL) $(MAKE) --no-print-directory pytest PYTEST_JOBS=0 \
		CONTRACT_TARGETS="$(PG_CONTRACT_TARGETS)" PYTEST_ARGS='-m "not once"'

clean: ## Remove the virtualenvs, local databases and caches
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
