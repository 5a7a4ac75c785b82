# Two commands do all the set-up on a fresh machine with Python 3.11+ and pip:
#   make demo   creates .venv if missing, installs imgrade, runs the demo on synthetic cucumbers
#   make test   creates .venv if missing, installs imgrade with its test tools, checks the layers
#               (import-linter) and the style (ruff), runs the tests
#               (as root it also apt-get installs Chromium + chromedriver for tests/browser)
#   both, as root, also apt-get install tcmalloc (libtcmalloc-minimal4), which imgrade then uses
# .ci/run then runs `make ci-extra`: the lowest allowed dependency versions, and the wheel without torch.
# The venv gets imgrade[test]: the train and serve extras plus the test tools (pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.imgrade-installed

.PHONY: demo test lint install browser tcmalloc clean ci-extra

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned to the CPU build in constraints.txt; GPU users see README.md
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

# tests/browser drives a real headless Chromium: Debian's chromium + chromium-driver, installed once.
browser:
	@test -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver for the browser tests (apt-get)"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	  else \
	    echo "hint: the browser tests skip without Chromium; install it: sudo apt-get install chromium chromium-driver"; \
	  fi; }

# tcmalloc: imgrade re-runs itself with it preloaded when installed (PyTorch inference on many images
# 2.4x faster on CPU than with glibc malloc; see src/imgrade/core/allocator.py). Installed once, as root.
tcmalloc:
	@ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libtcmalloc-minimal4, a faster allocator for training and inference (apt-get)"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4 >/dev/null; \
	  else \
	    echo "hint: training and inference run faster with tcmalloc: sudo apt-get install libtcmalloc-minimal4"; \
	  fi; }

install: $(STAMP) browser tcmalloc

demo: $(STAMP) tcmalloc
	$(VENV)/bin/imgrade demo --out demo-run --overwrite

# OpenVINO's tests run in a pytest process of their own: loaded into the suite's one long process,
# beside everything the other tests load (torch.compile, Ray, ...), OpenVINO crashed it
test: $(STAMP) browser tcmalloc lint
	$(PY) -m pytest -m "not openvino"
	$(PY) -m pytest -m openvino tests

# the layers (import-linter contracts in pyproject.toml) and ruff's lint and format checks
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check src tests benchmarks scripts examples

# packaging checks for CI (a few minutes; fresh venvs in a temporary folder, the pip cache reused):
# scripts/lowest_deps.sh installs the lowest versions pyproject.toml allows and runs a smoke subset;
# scripts/wheel_check.sh builds the wheel and sdist, installs the wheel without torch, grades a photo
ci-extra: $(STAMP)
	PYTHON=$(PYTHON) scripts/lowest_deps.sh
	VENV=$(VENV) PYTHON=$(PYTHON) scripts/wheel_check.sh

clean:
	rm -rf $(VENV) demo-run .pytest_cache
