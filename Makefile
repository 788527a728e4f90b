# relaygraph developer targets. Everything runs from the project virtualenv (.venv).
#
#   make demo    run the offline customer-refund demo (writes relaygraph-demo.db here)
#   make test    run the test suite; writes nothing outside .venv
#   make lint    ruff on src, tests and bench; mypy on src
#   make bench   the checkpointer benchmark (prints a table; takes minutes)
#   make bench-async   the async savers under ainvoke (a minute or two)
#   make bench-dictionaries   thread dictionaries on and off (BENCH_ARGS="--db postgres")
#   make bench-inbox   the review inbox's pages with 10,000 threads in PostgreSQL
#   make screenshots   the review inbox in headless Chromium, saved under docs/img/

PYTHON := .venv/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

# Keep every cache and scratch file of the test run inside .venv.
TEST_ENV := PYTHONDONTWRITEBYTECODE=1 TMPDIR=$(CURDIR)/.venv/.tmp \
	HYPOTHESIS_STORAGE_DIRECTORY=.venv/.hypothesis \
	JUPYTER_RUNTIME_DIR=.venv/.jupyter/runtime \
	IPYTHONDIR=.venv/.ipython

.PHONY: demo test lint bench bench-async bench-dictionaries bench-inbox screenshots

$(PYTHON):
	python3 -m venv .venv
	.venv/bin/pip install -q -e ".[dev]"

demo: $(PYTHON)
	.venv/bin/relaygraph demo

test: $(PYTHON)
	mkdir -p .venv/.tmp
	$(TEST_ENV) $(PYTHON) -m pytest -p no:cacheprovider --basetemp=.venv/.pytest-tmp $(PYTEST_ARGS)

lint: $(PYTHON)
	$(PYTHON) -m ruff check --no-cache src tests bench
	$(PYTHON) -m mypy --cache-dir .venv/.mypy_cache src

bench: $(PYTHON)
	$(PYTHON) bench/bench_checkpointers.py $(BENCH_ARGS)

bench-async: $(PYTHON)
	$(PYTHON) bench/bench_async.py $(BENCH_ARGS)

bench-dictionaries: $(PYTHON)
	$(PYTHON) bench/bench_dictionaries.py $(BENCH_ARGS)

bench-inbox: $(PYTHON)
	$(PYTHON) bench/bench_inbox.py $(BENCH_ARGS)

screenshots: $(PYTHON)
	RELAYGRAPH_SHOTS=docs/img $(PYTHON) -m pytest -p no:cacheprovider -q tests/serve/test_inbox_browser.py
