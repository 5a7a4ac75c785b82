# Two commands do all the set-up on a fresh machine with Python 3.11+ and pip:
#   make demo   creates .venv if missing, installs imgrade, runs the demo on synthetic cucumbers
#   make test   creates .venv if missing, installs imgrade with its test tools, runs the tests
#               (as root it also apt-get installs Chromium + chromedriver for tests/browser)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.imgrade-installed

.PHONY: demo test install browser clean

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

install: $(STAMP) browser

demo: $(STAMP)
	$(VENV)/bin/imgrade demo --out demo-run --overwrite

test: $(STAMP) browser
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo-run .pytest_cache
