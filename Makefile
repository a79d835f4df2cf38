# Quick start: `make train` (the default job on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test`; each worker holds its own JAX runtime (~1-2 GiB).
TEST_WORKERS ?= 2

.PHONY: install test test-fast lint typecheck docs train bench clean fashion-mnist

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,train,notebooks,docs]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site, warnings as errors (-W --keep-going: every warning is reported, then the
# build fails), nitpicky about cross-references (-n), from a fresh environment (-E: warnings of
# pages that did not change are reported again). Notebooks are rendered, not executed.
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

# --dist loadgroup keeps the tests that share a trained fixture (xdist_group) on one worker.
test: lint typecheck docs
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15

# The inner loop: the layer, the functions and the models, nothing that trains, runs a notebook
# or starts processes (those are marked slow). `make test` stays the full suite CI runs.
# It keeps JAX's compilation cache between runs in $(FAST_CACHE) (about 50 MB; `make clean`
# removes it): a program whose HLO is unchanged since a previous run is loaded, not compiled
# again. The cache key covers the program, the flags and the jax/jaxlib versions. (No size
# bound: JAX's, jax_compilation_cache_max_size, made a cold run four times slower here.)
FAST_CACHE := .jax_cache/test-fast
test-fast: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(abspath $(FAST_CACHE)) \
		$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow" --durations=5 \
		--hypothesis-profile=inner-loop

train: $(STAMP)
	$(BIN)/python -m train --workdir runs/default --config train/configs/default.py

# Fashion-MNIST's four IDX files, from Debian's package, where the fashion_mnist data set looks.
fashion-mnist:
	@if command -v apt-get >/dev/null 2>&1; then \
		apt-get update && apt-get install -y dataset-fashion-mnist; \
	else \
		echo "No apt-get here: download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"; \
		echo "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from"; \
		echo "https://github.com/zalandoresearch/fashion-mnist into a folder and pass it as"; \
		echo "--config.manual_dir (default /usr/share/datasets/fashion-mnist)."; \
	fi

bench: $(STAMP)
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.resnet50
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.family

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache .jax_cache docs/_build docs/notebooks
