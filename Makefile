# The two commands of the README's quickstart: `make demo` and `make test`.
# Both create .venv and install the project into it first; nothing else is needed
# beyond Python 3.11+ and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration integration-tansu e2e bench lint clean typecheck

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# An editable install in setuptools' default (lenient) mode: its import hook maps
# driftloop.shared to shared/ and driftloop.services to services/ (pyproject's
# package-dir), and modules added later are found without reinstalling. Neither
# editable_mode=compat (it would put the bare folder names on sys.path) nor strict
# (a link tree that misses new files) is wanted.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/driftloop demo

# pytest exits 5 when it collects no tests; that must fail the build, and it does:
# make fails on any non-zero exit. Every tier runs on Apache Kafka (the session broker
# fixture, tests/conftest.py); the integration tier runs a second time on Tansu, the
# fallback for machines without a JDK.
test: $(STAMP) ensure-tools
	$(BIN)/ruff check .
	MYPY=$(BIN)/mypy bash scripts/typecheck
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider tests
	DRIFTLOOP_TEST_ENGINE=tansu $(BIN)/python -m pytest -q -rs -p no:cacheprovider tests/integration

# prometheus, promtool, openssl and kcat for the tests: installs Debian's packages when run
# as root; otherwise fails under CI=true, or says locally which tests will be skipped.
.PHONY: ensure-tools
ensure-tools:
	bash scripts/ensure-tools

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

integration-tansu: $(STAMP)
	DRIFTLOOP_TEST_ENGINE=tansu $(BIN)/python -m pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

bench: $(STAMP)
	$(BIN)/driftloop bench

lint: $(STAMP)
	$(BIN)/ruff check .
	MYPY=$(BIN)/mypy bash scripts/typecheck

clean:
	rm -rf $(VENV) out .driftloop-data artifacts *.egg-info build dist

typecheck: $(STAMP)
	MYPY=$(BIN)/mypy bash scripts/typecheck
