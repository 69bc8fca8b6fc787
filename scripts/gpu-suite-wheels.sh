#!/usr/bin/env bash
# Wheels `make gpu-suite` needs on a GPU host whose python3 (3.12) already has CUDA torch,
# transformers, peft, httpx and the rest but not CIR's serving stack or FAISS (e.g. this
# workplace's lent H200 machine, which reaches no package index). Downloads them into .whl/
# (git-ignored, ~40 MB); docs/backbones.md shows the command that installs and runs them there.
# faiss-gpu is not among them (its CUDA wheels are far larger): the faiss section then skips.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
WHEELS=(
  faiss-cpu==1.15.1 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.14.4
  pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 typing-inspection==0.4.5
  python-dotenv==1.2.4 python-multipart==0.0.34 opentelemetry-api==1.45.2
)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
du -sh .whl
