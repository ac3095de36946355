# The two commands of the README's quickstart: `make demo` and `make test`.
# Both create .venv and install the project into it first; nothing else is needed
# beyond Python 3.11+ and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration e2e bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/driftloop demo

# pytest exits 5 when it collects no tests; that must fail the build, and it does:
# make fails on any non-zero exit.
test: $(STAMP) ensure-prometheus
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider tests

# prometheus and promtool for the alert-rule and dashboard tests: installs Debian's package
# when run as root, otherwise says that those tests will be skipped (never fails).
.PHONY: ensure-prometheus
ensure-prometheus:
	bash scripts/ensure-prometheus

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

bench: $(STAMP)
	$(BIN)/driftloop bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out .driftloop-data artifacts *.egg-info
