#!/usr/bin/env bash
# Smoke test of the container stack: build the CPU image, `compose up` with the demo defaults,
# query /search, tear down. Needs a Docker engine (starts dockerd if it is installed but not
# running). With no image registry reachable, the base image is built from Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${SMOKE_PORT:-18080}"
PROJECT="cirsmoke"
BASE="${SMOKE_BASE:-python:3.11-slim-bookworm}"
LOCAL_BASE="cir-base:bookworm"
log() { printf '[compose-smoke] %s\n' "$*"; }

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); 
elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose);
else echo "no docker compose (v2 plugin or docker-compose) installed" >&2; exit 2; fi

if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "no Docker engine: install docker.io" >&2; exit 2; }
  log "starting dockerd"
  (dockerd >/tmp/cir-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/cir-dockerd.log" >&2; exit 2; }
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    log "base image $BASE not available: building $LOCAL_BASE with debootstrap"
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" http://deb.debian.org/debian >/tmp/cir-debootstrap.log 2>&1
    tar -C "$rootfs" -c . | docker import - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
  fi
  BASE="$LOCAL_BASE"
fi

# Offer a local CPU torch wheel to the build when this host has one (then skip the PyTorch index).
TORCH_ARGS=()
for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
  if ls "$dir"/torch-*+cpu-*.whl >/dev/null 2>&1; then
    cp -n "$dir"/torch-*+cpu-*.whl docker/wheels/; TORCH_ARGS=(--build-arg TORCH_INDEX_URL=); break
  fi
done
# Behind a TLS-intercepting proxy pip inside the build needs this host's CA bundle.
CA="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
mkdir -p docker/certs
if [ -n "$CA" ] && [ -s "$CA" ]; then cp "$CA" docker/certs/ca-bundle.crt; fi

log "building cir:cpu on $BASE"
docker build --network host -f docker/Dockerfile.cpu --build-arg BASE="$BASE" "${TORCH_ARGS[@]}" -t cir:cpu . \
  >/tmp/cir-build.log 2>&1 \
  || { tail -30 /tmp/cir-build.log; exit 1; }

export CIR_IMAGE=cir:cpu CIR_PORT="$PORT"
cleanup() { "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.cpu.yml down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT
log "compose up (index, then api)"
"${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.cpu.yml up -d --no-build

for _ in $(seq 180); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 2
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || {
  "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.cpu.yml logs --tail 50; exit 1; }

# The query image is drawn by the image's own Python (Pillow), then sent from this host.
query=$(mktemp --suffix=.png)
docker run --rm --entrypoint python3 cir:cpu -c '
import io, sys
from PIL import Image, ImageDraw
im = Image.new("RGB", (32, 32), (128, 128, 128))
ImageDraw.Draw(im).ellipse((4, 4, 28, 28), fill=(215, 35, 35))
buf = io.BytesIO(); im.save(buf, "PNG"); sys.stdout.buffer.write(buf.getvalue())' > "$query"
answer=$(curl -fsS -F image=@"$query" -F text="make it blue" -F k=5 "http://127.0.0.1:$PORT/search")
rm -f "$query"
python3 -c 'import json, sys
out = json.loads(sys.argv[1]); assert out["results"], out
print("[compose-smoke] /search ->", out["index_version"], [(r["id"], round(r["score"], 3)) for r in out["results"]])' "$answer"
log "OK"
