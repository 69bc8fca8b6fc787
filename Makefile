# CIR developer entry points. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch; on a CUDA host use e.g. TORCH_SPEC="torch==2.13.0" with the CUDA index.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.cir-installed
DEV_STAMP := $(VENV)/.cir-dev-installed

# The interpreter of `make gpu-suite`: this venv, or e.g. GPU_PYTHON=python3 on a host whose
# python3 already has CUDA torch (docs/backbones.md: the suite on a lent GPU).
GPU_PYTHON ?= $(BIN)/python

.PHONY: help demo test install dev system-tools toy-model clean compose-smoke conformance gpu-suite

help:
	@echo "make demo     - install into $(VENV) and run the offline demo on http://127.0.0.1:$${CIR_PORT:-8000}"
	@echo "make test     - install test dependencies (Chromium included) and run the test suite offline"
	@echo "make toy-model- retrain the built-in demo model (cir/assets/toy, ~15-25 min on 2 cores)"
	@echo "make compose-smoke - build the CPU image and smoke-test docker compose (needs a Docker engine)"
	@echo "make conformance - every backbone at its real size, random weights, on the CPU (slow, several GB)"
	@echo "make gpu-suite - the GPU check suite, ~8 min on one GPU -> runs/gpu_suite/report.{json,md}"
	@echo "make gpu-suite DRY=1 - the same suite on the CPU with tiny sizes (runs/gpu_suite_dry/)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

dev: $(DEV_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/cir demo

# The browser test drives Debian's Chromium and the compose test runs docker-compose's own
# validation; install them when we can (root + apt), else those tests skip.
SYSTEM_TOOLS := chromium docker-compose
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing$$missing and cannot install: the tests that need them will be skipped"; fi; \
	fi

test: $(DEV_STAMP) system-tools
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -rs

toy-model: $(STAMP)
	$(BIN)/python -m training.toy.model --out cir/assets/toy --seed 0

compose-smoke:
	bash scripts/compose-smoke.sh

conformance: $(DEV_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 flock /tmp/cir-bench.lock $(BIN)/python perf/conformance.py \
	  --json runs/conformance.json

# Only the venv interpreter needs installing first; another GPU_PYTHON is used as it is.
gpu-suite: $(if $(filter $(BIN)/python,$(GPU_PYTHON)),$(DEV_STAMP))
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  $(GPU_PYTHON) perf/gpu_suite.py $(if $(DRY),--dry)

clean:
	rm -rf .demo .pytest_cache build dist *.egg-info
