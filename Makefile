# The two commands a newcomer needs are `make demo` and `make test`; both build .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := src topics codecs streams providers rules

# Python caches compiled modules (and pytest its rewritten test modules) in __pycache__,
# even where the environment says not to (PYTHONDONTWRITEBYTECODE): without the cache each
# of the four test processes compiles every test module again (9 s of CPU each, measured)
# and every worker the tests and the demo start compiles the package again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast test-unit check bench broker worker simulator tree clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 'setuptools>=69,<81' wheel
	$(BIN)/pip install --quiet --no-build-isolation -e '.[dev]' --config-settings editable_mode=strict
	@find $(SOURCES) -name '*.py' -o -name '*.avsc' | sort > $(VENV)/.files
	touch $(STAMP)

# The editable install links each source file (so mypy sees the package as installed);
# a file added since then needs linking too. Cheap when nothing was added.
tree: $(STAMP)
	@find $(SOURCES) -name '*.py' -o -name '*.avsc' | sort > $(VENV)/.files.new
	@cmp -s $(VENV)/.files.new $(VENV)/.files || { \
		$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . \
			--config-settings editable_mode=strict && mv $(VENV)/.files.new $(VENV)/.files; }

demo: tree  ## the whole pipeline on the embedded broker, about two minutes
	$(BIN)/appfirst demo

# Four test processes: the integration tests mostly wait on brokers, workers and timers, so
# four share this 2-core machine well (each has its own broker). The tests that read the one
# demo run are kept in one process (xdist_group "demo"), so that it runs once. The 15
# slowest tests are listed at the end: where the suite's time goes.
test: tree  ## unit and integration tests (real embedded broker, real HTTP)
	$(BIN)/pytest -n 4 --dist loadgroup --durations=15

test-fast: tree  ## the unit tests only: no broker, no processes (under a minute)
	$(BIN)/pytest -q tests/unit

test-unit: test-fast

bench: tree  ## the performance measurements (about 15 minutes); results in bench/results/
	$(BIN)/python -m bench $(BENCH_ARGS)

check: tree  ## lint and strict types
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd build/__editable__.appfirst-*/ && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p appfirst

broker: tree
	$(BIN)/appfirst broker

worker: tree
	$(BIN)/appfirst worker

simulator: tree
	$(BIN)/appfirst simulator

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache *.egg-info
