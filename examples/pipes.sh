#!/usr/bin/env bash
# Piping the stages: each prints the paths it wrote, one per line, so the next reads them with `-`
# (stdin) or gets them from xargs. Logs and progress bars stay on stderr.
#
#   bash examples/pipes.sh                          # the paper's models
#   PRESET=tiny N=2 STEPS=2 bash examples/pipes.sh  # toy models on a CPU
set -euo pipefail
PRESET=${PRESET:-paper}
N=${N:-32}
STEPS=${STEPS:-30}
WORK=${WORK:-pipes}
VOCAB=${VOCAB:-"cat,dog,sky"}
IMAGE=${IMAGE:-$(dirname "$0")/data/table.png}

# one support set per class, attributed and masked as it streams through
ovdiff sample --vocab "$VOCAB" --models "$PRESET" -n "$N" --steps "$STEPS" -o "$WORK/support" \
  | ovdiff attribute - --models "$PRESET" \
  | ovdiff mask - --models "$PRESET" \
  | ovdiff prototype - --models "$PRESET" -x sd -x dino -o "$WORK/prototypes" \
  | xargs ovdiff filter-stuff --vocab "$VOCAB" -o "$WORK/banks" --json

# images from stdin; the label maps it prints, checked by `ovdiff info`
printf '%s\n' "$IMAGE" \
  | ovdiff segment - --bank "$WORK/banks" --models "$PRESET" -o "$WORK/segmentation" \
  | xargs ovdiff info \
  | python3 -c 'import json, sys; print(sum(1 for line in sys.stdin if json.loads(line)["kind"] == "image"), "label maps")'
