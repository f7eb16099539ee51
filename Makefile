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

.PHONY: install demo test lint bench bench-gpu browser
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sjd-batch run jobs/demo.yaml

test: $(STAMP) browser
	RAY_AUTH_MODE=disabled $(PY) -m pytest

# The report's browser test renders the page in headless Chromium (Debian's `chromium`). Installed once,
# with apt-get as root or passwordless sudo; without either it is left out and that test skips (on CI,
# where CI is set, it fails instead).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "chromium is missing; installing it needs root or sudo (its test will skip)" >&2; exit 0; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "chromium is missing and there is no apt-get" >&2; exit 0; }; \
	  echo "installing chromium (apt-get) for the report's browser test" >&2; \
	  $$sudo apt-get update -qq >/dev/null && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	  || echo "chromium install failed; the report's browser test will say so" >&2; }

lint: $(STAMP)
	$(VENV)/bin/ruff check sjd_batch tests

bench: $(STAMP)
	$(VENV)/bin/sjd-batch bench --model shapes-t2i --methods ar,sjd,sjd-vp,mc-sjd --prompts 16 --json bench.json

# On a machine with one CUDA GPU (a CUDA build of torch installed, README "GPU install"): the CUDA tests,
# forward time vs window and batch at the real families' sizes, and bench of ar, sjd, sjd-vp, mc-sjd and
# mc-sjd-vp on the shipped models, in at most 8 minutes; JSON under $(OUT).
OUT ?= bench-gpu-out
bench-gpu: $(STAMP)
	RAY_AUTH_MODE=disabled $(VENV)/bin/sjd-batch bench-gpu --out $(OUT) --budget-s 480
