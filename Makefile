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
# A first install takes about 6.7 GB (PyPI's torch for Linux brings its CUDA libraries), so warn
# before pip when the disk has less: pip's own "No space left on device" comes mid-install.
NEED_KB := 7000000
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { free=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	  if [ "$$free" -lt $(NEED_KB) ]; then \
	    echo "robokit setup: warning: $$((free / 1024)) MB free here, a first install needs about 7 GB" \
	         "(torch with its CUDA libraries); free some disk space if pip fails with 'No space left'" >&2; \
	  fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/robokit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=15

# Some benchmarks deploy the checkpoint the demo trains: make it first if it is not there.
bench: $(STAMP)
	@test -f demo_out/run/last.pt || $(BIN)/robokit demo --out demo_out
	@mkdir -p benchmarks/results
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check robokit tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
