#!/usr/bin/env bash
# Growing a vocabulary: prototypes depend on their class alone, so adding "dog" to a vocabulary
# samples and pools only the dog; the per-vocabulary bank and the segmentation are rebuilt.
#
#   bash examples/add_class.sh                          # the paper's models
#   PRESET=tiny N=2 STEPS=2 bash examples/add_class.sh  # toy models on a CPU
set -euo pipefail
PRESET=${PRESET:-paper}
N=${N:-32}
STEPS=${STEPS:-30}
WORK=${WORK:-add-class}
IMAGE=${IMAGE:-$(dirname "$0")/data/table.png}

ovdiff run --vocab "cat,donut with chocolate glaze" "$IMAGE" --models "$PRESET" -n "$N" --steps "$STEPS" -o "$WORK"
touch "$WORK/.mark"
ovdiff run --vocab "cat,donut with chocolate glaze,dog" "$IMAGE" --models "$PRESET" -n "$N" --steps "$STEPS" -o "$WORK"
# only the new class's support images are newer than the mark
echo "new support images: $(find "$WORK/support" -path '*/images/*.png' -newer "$WORK/.mark" | grep -c /dog/) of dog," \
  "$(find "$WORK/support" -path '*/images/*.png' -newer "$WORK/.mark" | grep -vc /dog/ || true) of the other classes"
