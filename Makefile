# The two set-up commands of the README:
#   make demo   installs into .venv (CPU torch) and runs the demo job on an embedded local Ray
#   make test   installs the test extras and runs the default test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

export RAY_USAGE_STATS_ENABLED ?= 0

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: here it resolves to the CPU wheel, so nothing pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,plots]'
	rm -f $(VENV)/.installed-* && touch $@

.PHONY: install demo test lint bench
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sjd-batch run jobs/demo.yaml

test: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check sjd_batch tests

bench: $(STAMP)
	$(VENV)/bin/sjd-batch bench --model shapes-t2i --methods ar,sjd,sjd-vp,mc-sjd --prompts 16 --json bench.json
