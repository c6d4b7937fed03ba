#!/usr/bin/env bash
# Support sets for a few classes, piped into attribution, then a summary of what was written.
#
#   bash examples/support_sets.sh                      # tiny preset, a few seconds on a CPU
#   PRESET=paper N=32 STEPS=30 bash examples/support_sets.sh   # the method's settings on a GPU
#   OUT=my-support bash examples/support_sets.sh       # where the folders go (default: support)
set -euo pipefail
PRESET=${PRESET:-tiny}
N=${N:-2}
STEPS=${STEPS:-2}
OUT=${OUT:-support}

# sample prints one folder per class; attribute reads them from stdin (`-`) and prints its files.
ovdiff sample cat "donut with chocolate glaze" --models "$PRESET" -n "$N" --steps "$STEPS" -o "$OUT" -q \
  | ovdiff attribute - --models "$PRESET" -q \
  | xargs ovdiff info \
  | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print(d["meta"]["class"], d["tensors"]["attribution"], " ".join(d["meta"]["tokens"]), sep="\t")'
