# Each target sets itself up: a venv in .venv, the requirements it needs, then the command.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# make demo: both servers bind HOST; the stand-in takes SPACE_PORT, else a free port. The app
# takes PORT when given (failing if it is taken), else 8501, else a free port.
HOST ?= 127.0.0.1
SPACE_PORT ?=
DEMO_ARGS = --host $(HOST) $(if $(filter-out default file,$(origin PORT)),--port $(PORT)) \
  $(if $(SPACE_PORT),--space-port $(SPACE_PORT))

.PHONY: run demo test lint bench browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.deps-run: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.deps-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.deps-run

run: $(VENV)/.deps-run  ## the app, against VGGT_BACKEND (default: the facebook/vggt Space)
	$(PY) -m streamlit run app.py --server.port $(PORT)

# Stand-in options go after --, e.g. make demo ARGS="-- --quota-error --fail-times 1".
demo: $(VENV)/.deps-dev  ## the app against a local stand-in of the Space: works offline
	@$(PY) -m vggt_core.demo $(DEMO_ARGS) $(ARGS)

browser:  ## Debian's chromium for the browser tests (Playwright's own download cannot work here)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "warning: chromium could not be installed; the browser tests will say why"; \
	  else echo "warning: chromium is missing and cannot be installed here (not root)"; fi; }

lint: $(VENV)/.deps-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(VENV)/.deps-dev browser lint  ## the whole suite: lint, unit, integration, AppTest, browser
	$(PY) -m pytest

bench: $(VENV)/.deps-dev  ## benchmarks; `make bench ARGS=--quick` for the reduced run
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
