# robokit: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.robokit-installed
export MUJOCO_GL ?= egl
# Two cores: keep torch from oversubscribing them.
export OMP_NUM_THREADS ?= 2

# uv installs the locked set (uv.lock) in about a third of pip's time cold and in seconds warm.
# It is bootstrapped from PyPI into the venv itself, so nothing outside the checkout is needed;
# where it cannot be installed, or with `make setup INSTALLER=pip`, pip installs the same extras
# from pyproject's version ranges instead.
INSTALLER  ?= uv
UV_VERSION := uv>=0.8,<1

.PHONY: setup demo test test-slow bench lint lock clean

setup: $(STAMP)

# Re-install only when the package metadata or the lock changes. The package is installed editable
# so that `robokit` on the venv's PATH runs this checkout. `uv sync` re-locks first when pyproject
# changed since uv.lock was written (commit the updated uv.lock); --inexact keeps uv and pip, which
# the lock does not list, in the venv.
# A first install takes about 6.7 GB (PyPI's torch for Linux brings its CUDA libraries), so warn
# before installing when the disk has less: "No space left on device" would come mid-install.
NEED_KB := 7000000
$(STAMP): pyproject.toml $(wildcard uv.lock)
	@test -x $(BIN)/python || { free=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	  if [ "$$free" -lt $(NEED_KB) ]; then \
	    echo "robokit setup: warning: $$((free / 1024)) MB free here, a first install needs about 7 GB" \
	         "(torch with its CUDA libraries); free some disk space if the install fails with 'No space left'" >&2; \
	  fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$(INSTALLER)" = uv ] && { test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet '$(UV_VERSION)'; }; then \
	  echo "UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --extra dev --inexact"; \
	  UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --quiet --extra dev --inexact; \
	else \
	  [ "$(INSTALLER)" = pip ] || echo "robokit setup: uv could not be installed; installing with pip" >&2; \
	  echo "$(BIN)/python -m pip install -e '.[dev]'"; \
	  $(BIN)/python -m pip install --quiet --upgrade pip && $(BIN)/python -m pip install --quiet -e '.[dev]'; \
	fi
	touch $(STAMP)

# After editing dependencies in pyproject.toml: write uv.lock again (then commit it).
lock:
	test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install --quiet '$(UV_VERSION)'; }
	$(BIN)/uv lock

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
