#!/usr/bin/env bash
# The quick start: support sets for two classes, drawn by Stable Diffusion, then every stage up to a
# segmentation of examples/data/table.png, one command per stage.
#
#   bash examples/quickstart.sh                          # the paper's models and settings (GPU advised)
#   PRESET=tiny N=2 STEPS=2 bash examples/quickstart.sh  # toy models: seconds on a CPU, meaningless output
set -euo pipefail
PRESET=${PRESET:-paper}
N=${N:-32}
STEPS=${STEPS:-30}
WORK=${WORK:-quickstart}
IMAGE=${IMAGE:-$(dirname "$0")/data/table.png}
VOCAB="donut with chocolate glaze,cat"

ovdiff sample "donut with chocolate glaze" cat --models "$PRESET" -n "$N" --steps "$STEPS" -o "$WORK/support"
ovdiff attribute "$WORK"/support/* --models "$PRESET"
ovdiff mask "$WORK"/support/* --models "$PRESET"
ovdiff prototype "$WORK"/support/* --models "$PRESET" -o "$WORK/prototypes"
ovdiff filter-stuff "$WORK"/prototypes/*.safetensors --vocab "$VOCAB" -o "$WORK/banks"
ovdiff classify "$IMAGE" --vocab "$VOCAB" --models "$PRESET" -o "$WORK/candidates.jsonl"
ovdiff segment "$IMAGE" --bank "$WORK/banks" --candidates "$WORK/candidates.jsonl" --models "$PRESET" \
  --overlay -o "$WORK/segmentation"
