# The two commands: `make demo` and `make test`. Both build .venv from pyproject.toml first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test venv browser lint bench clean

demo: $(STAMP)
	$(VENV)/bin/surveil up

# TEST_JOBS=2 runs the suite on two processes (pytest-xdist, a module per process at a time;
# each module has its own embedded broker): ~10 min instead of ~18 here, but two heavy
# integration modules at once can starve each other's workers, so CI runs it in one process.
TEST_JOBS ?= 0

test: $(STAMP) browser
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Headless Chromium for the dashboard's browser test (Debian package; the test suite drives
# it through Playwright). Installed when missing and we may install; otherwise the browser
# test says why it cannot run.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the browser test"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium is not installed and cannot be installed here; the browser test will report it"; \
	  fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/surveil bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
