# Two commands for a newcomer:  make run  (service + sandbox)  and  make test  (whole suite).
# Both set everything up first: virtualenv, Python packages, Azurite (npm), Chromium for browser tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP_PY := $(VENV)/.installed
STAMP_LOCAL := $(VENV)/.installed-local
STAMP_NODE := node_modules/.installed

.PHONY: setup setup-local run sandbox test test-fast check lint typecheck bench soak fuzz clean browser calendar-readers lock

setup: $(STAMP_PY) $(STAMP_NODE)

# What `make run` needs (the app, the local host, the sandbox); tests and tools come on top, so a
# newcomer's first `make run` does not wait for the test stack to install.
setup-local: $(STAMP_LOCAL) $(STAMP_NODE)

# Installs come from the hashed locks only (exact versions, every file checked against its hash);
# `make lock` is the one way to change them.
$(STAMP_LOCAL): requirements.txt requirements-local.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-local.lock
	@touch $@

$(STAMP_PY): $(STAMP_LOCAL) requirements-dev.lock
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	@touch $@

## make lock — resolve the ranges again (requirements.in: deployed; requirements-local.txt: make run;
## requirements-dev.txt: make test) into requirements.txt, requirements-local.lock and
## requirements-dev.lock: newest versions within the ranges, with hashes, for Python 3.11 on Linux.
## Each lock is constrained by the one before, so all three pin the runtime packages alike.
LOCK_VENV := .lock-venv
PIP_TOOLS := pip-tools==7.6.2
LOCK := $(LOCK_VENV)/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

lock:
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install --quiet "$(PIP_TOOLS)"; }
	$(LOCK) --output-file requirements.txt requirements.in
	$(LOCK) --constraint requirements.txt --output-file requirements-local.lock requirements-local.txt
	$(LOCK) --constraint requirements-local.lock --output-file requirements-dev.lock requirements-dev.txt

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian's Chromium drives the browser tests (test tools may not download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# calcurse reads the ICS feed in tests as one of its independent clients (tests/ics/feed_readers.py).
calendar-readers:
	@command -v calcurse >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq calcurse; }

## make run — Azurite + sandbox (Microsoft identity, Graph, timum) + the function app on http://127.0.0.1:7071
run: setup-local
	$(PY) -m devtools.run

## the sandbox alone (for integrators pointing their own service at it)
sandbox: setup-local
	$(PY) -m devtools.sandbox

## make test — the whole suite against real Azurite, the sandbox and headless Chromium
test: setup browser calendar-readers
	$(PY) -m pytest -q -p no:cacheprovider

## the fast tier: twins only, no Azurite, sandbox or local host (tests/conftest.py marks the rest 'stack')
test-fast: setup calendar-readers
	TIMUM_TEST_TIER=fast $(PY) -m pytest -q -p no:cacheprovider -m "not browser and not slow and not stack"

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(PY) -m mypy

check: lint typecheck test

bench: setup
	$(PY) -m bench

## the long fault-injection soak (10,000 seeded steps) and the long fuzz run (200 requests per endpoint)
soak: setup
	$(PY) -m bench.soak --steps 10000

fuzz: setup
	$(PY) -m bench.fuzz --examples 200

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
