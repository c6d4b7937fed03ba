#!/usr/bin/env bash
# Which models can run here, and filling the caches ahead of offline use.
#
#   bash examples/models.sh            # checks the tiny preset (always ready)
#   PRESET=paper bash examples/models.sh   # checks the real models; downloads them if missing
set -euo pipefail
PRESET=${PRESET:-tiny}

ovdiff models list | awk -F'\t' -v p="$PRESET" '$1 == p { printf "%-18s %s\n", $2, $3 }'

if ! ovdiff models check "$PRESET" > /dev/null; then
  echo "some $PRESET models are missing; downloading them (needs internet)" >&2
  ovdiff models download "$PRESET"
fi
ovdiff models check "$PRESET" --json | python3 -c 'import json, sys; print(sum(s["ready"] for s in json.load(sys.stdin)), "models ready")'
