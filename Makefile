# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The environment (.venv) is created from uv.lock by a pinned uv, itself installed
# into .tools with the system python3; nothing else needs installing by hand.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
SYNCED := $(VENV)/.synced
# anonymeter pins numpy < 1.27: it gets its own environment (envs/privacy), called by twinloop.govern.privacy
PRIVACY_VENV := .venv-privacy
PRIVACY_SYNCED := $(PRIVACY_VENV)/.synced
# DAPPER, the data-assimilation reference tests/test_assimilation.py and benchmarks/bench_l63.py
# compare the filters against, pins dill/pathos below SALib's and pulls in Jupyter: its own env too
DAPPER_VENV := .venv-dapper
DAPPER_SYNCED := $(DAPPER_VENV)/.synced
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: env demo test lint typecheck unit test-all bench postgres clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(SYNCED): $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $(SYNCED)

$(PRIVACY_SYNCED): $(UV) envs/privacy/pyproject.toml envs/privacy/uv.lock
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(PRIVACY_VENV) $(UV) sync --frozen --project envs/privacy --python $(PYTHON)
	touch $(PRIVACY_SYNCED)

$(DAPPER_SYNCED): $(UV) envs/dapper/pyproject.toml envs/dapper/uv.lock
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(DAPPER_VENV) $(UV) sync --frozen --project envs/dapper --python $(PYTHON)
	touch $(DAPPER_SYNCED)

env: $(SYNCED) $(PRIVACY_SYNCED) $(DAPPER_SYNCED)

demo: env
	$(VENV)/bin/twinloop demo --out out/demo

lint: env
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: env
	$(VENV)/bin/mypy src

# The registry tests start a throw-away PostgreSQL server; install the Debian package if missing.
postgres:
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { echo "installing PostgreSQL (Debian package) for the registry tests"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

# Test files run on two processes (CI has 2 cores; XLA runs these loops on one core each);
# a file stays on one process, so its module fixtures are computed once.
PYTEST_WORKERS ?= 2

unit: env postgres
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25

test: lint typecheck unit

test-all: env postgres
	$(VENV)/bin/pytest -m "not gpu"

bench: env
	$(VENV)/bin/python benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) $(PRIVACY_VENV) $(DAPPER_VENV) $(TOOLS) out .pytest_cache .mypy_cache .ruff_cache
