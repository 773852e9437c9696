# The few commands a newcomer needs; the README shows the same ones.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint install install-dev bench clean

run: $(VENV)/.installed  ## install, migrate and start web + training worker + beat on port 5000
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

test: $(VENV)/.installed-dev  ## install test tools (and Debian's chromium for the browser test), run the suite
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev  ## everyday tier: no live service, browser or fuzzing; one worker per core
	$(BIN)/pytest -n auto -m "not slow and not live and not fuzz" $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

bench: $(VENV)/.installed-dev  ## the hot-path benchmark against a constant DRF endpoint (docs/BENCHMARKS.md); needs wrk
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python benchmarks/api_throughput.py $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache
