# The two commands of the README:
#   make demo   set up (first time) and run the main job on the embedded default
#   make test   set up (first time) and run lint, type checks and the whole test suite
# Both are idempotent: the virtualenv in $(VENV) is reused while pyproject.toml is unchanged.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck pytest bench setup system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	# torch first, pinned: an unpinned torch would pull several GB of CUDA packages
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

system-deps:
	bash .ci/system-deps

demo: $(STAMP)
	$(VENV)/bin/streamvae demo $(DEMO_ARGS)

LINT_PATHS := $(wildcard streamvae tests bench)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
