# robokit: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.robokit-installed
export MUJOCO_GL ?= egl
# Two cores: keep torch from oversubscribing them.
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-slow bench lint clean

setup: $(STAMP)

# Re-install only when the package metadata changes. The package is installed editable so that
# `robokit` on the venv's PATH runs this checkout.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m robokit.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=15

bench: $(STAMP)
	@mkdir -p benchmarks/results
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check robokit tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
