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
	@echo "make test     - install the test dependencies into $(VENV) and run the test suite offline"
	@echo "make system-tools - apt-install Chromium for the browser test (CIR_TEST_COMPOSE=1: also docker-compose and Docker)"
	@echo "make toy-model- retrain the built-in demo model (cir/assets/toy, ~15-25 min on 2 cores)"
	@echo "make compose-smoke - build the CPU image and smoke-test docker compose (needs a Docker engine)"
	@echo "make conformance - every backbone at its real size, random weights, on the CPU (slow, several GB)"
	@echo "make gpu-suite - the GPU check suite, ~8 min on one GPU -> runs/gpu_suite/report.{json,md}"
	@echo "make gpu-suite DRY=1 - the same suite on the CPU with tiny sizes (runs/gpu_suite_dry/)"

# The installer: uv by default (installed into the venv with its pip: the packages of a fresh
# clone in about a third of pip's time), or plain pip with INSTALLER=pip (also what happens when uv
# cannot be installed). uv does not read pip's configuration, so each folder of PIP_FIND_LINKS (a
# local wheel folder, such as a CPU torch) is passed on. Bytecode is compiled at install time: a
# machine with PYTHONDONTWRITEBYTECODE set would otherwise compile torch on every start.
INSTALLER ?= uv
UV_OPTS = -q --compile-bytecode --python $(BIN)/python $(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
install_packages = if [ "$(INSTALLER)" = uv ] && [ -x $(BIN)/uv ]; then $(BIN)/uv pip install $(UV_OPTS) $(1); else $(BIN)/pip install -q $(1); fi

$(BIN)/python:
	@echo "creating $(VENV) (installer: $(INSTALLER))"
	$(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(BIN)/pip install -q uv || echo "uv could not be installed: installing with pip"
else
	$(BIN)/pip install -q --upgrade pip
endif

# torch pinned in the same command: an unpinned torch would pull a multi-GB CUDA build.
# The serving install: no plotting, evaluation tables or peers' tools (extras: eval, dev).
$(STAMP): pyproject.toml | $(BIN)/python
	$(call install_packages,"$(TORCH_SPEC)" -e .)
	touch $@

$(DEV_STAMP): $(STAMP)
	@echo "installing the test dependencies into $(VENV) (nothing outside it)"
	$(call install_packages,"$(TORCH_SPEC)" -e ".[dev]")
	touch $@

install: $(STAMP)

dev: $(DEV_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/cir demo

# System-wide tools, installed only when asked for (`make system-tools`, as root with apt): Debian's
# Chromium for the browser test (tests/test_service_browser.py), and with CIR_TEST_COMPOSE=1 also
# docker-compose, which pulls in Docker (docker.io, with its systemd units) for the compose CLI
# check. `make test` installs nothing outside $(VENV): without them those tests skip and say why.
SYSTEM_TOOLS := chromium $(if $(CIR_TEST_COMPOSE),docker-compose)
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then echo "system tools present: $(SYSTEM_TOOLS)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing system-wide with apt-get:$$missing"; \
	  (apt-get update -q || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "missing$$missing and cannot install them (needs root and apt): those tests will be skipped"; fi

test: $(DEV_STAMP)
	@command -v chromium >/dev/null 2>&1 || echo "note: no chromium, the browser tests skip (\`make system-tools\` installs it with apt)"
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
