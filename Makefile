# Two commands do all the set-up on a fresh machine with Python 3.11+ and pip:
#   make demo   creates .venv if missing, installs imgrade, runs the demo on synthetic cucumbers
#   make test   creates .venv if missing, installs imgrade with its test tools, runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.imgrade-installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned to the CPU build in constraints.txt; GPU users see README.md
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/imgrade demo --out demo-run --overwrite

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo-run .pytest_cache
