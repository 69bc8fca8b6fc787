#!/bin/sh
# Container entry point: `train`, `index` or `serve`, configured by environment variables.
# Defaults run the built-in demo: the `toy` model on a generated shapes-world gallery.
set -eu

MODEL="${CIR_MODEL:-toy}"
WORLD="${CIR_WORLD_DIR:-/data/world}"
GALLERY="${CIR_GALLERY:-}"
CAPTIONS="${CIR_CAPTIONS:-}"
ADAPTER_DIR="${CIR_ADAPTER_DIR:-/models/adapter}"
INDEX_ROOT="${CIR_INDEX:-/data/index}"
# The toy model's best text weight is 0.7 (docs/tat.md); real CLIPs use the paper's 0.8-0.9.
if [ "$MODEL" = toy ]; then DEFAULT_ALPHA=0.7; else DEFAULT_ALPHA=0.8; fi

demo_world() {
  # Only the demo defaults need the generated world; a real gallery is mounted instead.
  if [ ! -f "$WORLD/world.json" ]; then
    cir toyworld --out "$WORLD" --seed "${CIR_WORLD_SEED:-1}" --gallery-size "${CIR_WORLD_SIZE:-600}"
  fi
}

adapter_args() {
  if [ -f "$ADAPTER_DIR/adapter_config.json" ]; then echo "--adapter $ADAPTER_DIR"; fi
}

case "${1:-serve}" in
  train)
    shift
    if [ -z "$CAPTIONS" ]; then demo_world; CAPTIONS="$WORLD/captions.jsonl"; fi
    exec cir train --model "$MODEL" --data "$CAPTIONS" --out "$ADAPTER_DIR" ${CIR_TRAIN_ARGS:-} "$@"
    ;;
  index)
    shift
    if [ -z "$GALLERY" ]; then demo_world; GALLERY="$WORLD/circo/COCO2017_unlabeled/unlabeled2017"; fi
    # shellcheck disable=SC2046
    exec cir index build --gallery "$GALLERY" --model "$MODEL" $(adapter_args) --out "$INDEX_ROOT" \
      --device "${CIR_DEVICE:-auto}" --alpha "${CIR_DEFAULT_ALPHA:-$DEFAULT_ALPHA}" ${CIR_INDEX_ARGS:-} "$@"
    ;;
  serve)
    shift
    exec cir serve --index "$INDEX_ROOT" "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
