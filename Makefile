# The two commands a newcomer needs are `make demo` and `make test`; both build .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench broker worker simulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## the whole pipeline on the embedded broker, about two minutes
	$(BIN)/appfirst demo

test: $(STAMP)  ## unit and integration tests (real embedded broker, real HTTP)
	$(BIN)/pytest

check: $(STAMP)  ## lint and strict types
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy appfirst topics codecs streams providers rules

broker: $(STAMP)
	$(BIN)/appfirst broker

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
