# The two commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c  # a failing pip fails the target even when piped
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck ci clean bench wheelhouse

$(BIN)/.run-installed: requirements.txt
	@echo "make: installing the runtime requirements into $(VENV) (first run only, about a minute)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements.txt | sed -un '/^\(Collecting\|Successfully\)/p'  # one line per package
	touch $@

$(BIN)/.dev-installed: requirements.txt requirements-dev.txt
	@echo "make: installing the development requirements into $(VENV) (first run only)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(BIN)/.run-installed

run: $(BIN)/.run-installed
	$(BIN)/python app.py

# Coverage of core/ with the floor in pyproject.toml; `make test COV_ARGS= PYTEST_ARGS=tests/core` for a subset.
COV_ARGS ?= --cov=core --cov-report=term:skip-covered

test: $(BIN)/.dev-installed
	$(BIN)/python -m pytest $(COV_ARGS) $(PYTEST_ARGS)

lint: $(BIN)/.dev-installed
	$(BIN)/ruff check core config modules tests bench app.py
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/vulture
	$(BIN)/hadolint Dockerfile
	$(BIN)/kubernetes-validate --strict -k 1.30.0 --quiet deploy/k8s/*.yaml  # offline: schemas ship in the package
	@if command -v promtool >/dev/null; then promtool check rules deploy/prometheus/alerts.yml \
	  && promtool test rules deploy/prometheus/alerts.test.yml; \
	else echo "make lint: promtool missing (apt-get install prometheus): alert rules not checked"; fi

$(BIN)/.bench-installed: $(BIN)/.dev-installed bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $@

# Every benchmark in bench/, results in bench/RESULTS.md; `make bench QUICK=1` for short runs.
bench: $(BIN)/.bench-installed
	$(BIN)/python -m bench $(if $(QUICK),--quick)

# Every runtime wheel into $(WHEELHOUSE)/ (built on this OS, CPU and Python) for an air-gapped
# install: `pip install --no-index --find-links wheelhouse -r requirements.txt`, or `docker build .`.
WHEELHOUSE ?= wheelhouse
wheelhouse:
	mkdir -p $(WHEELHOUSE)
	rm -f $(WHEELHOUSE)/*.whl
	$(PYTHON) -m pip wheel --disable-pip-version-check --quiet --wheel-dir $(WHEELHOUSE) -r requirements.txt
	@echo "make: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels in $(WHEELHOUSE)/"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
