#!/usr/bin/env bash
# Evaluating on PASCAL VOC 2012 val: prototypes for its 20 classes, the 1,449 validation images
# segmented, and the mIoU with background (21 labels).
#
#   bash examples/evaluate_voc.sh /data/VOCdevkit                   # the paper's models (GPU advised)
#   PRESET=tiny N=2 STEPS=2 bash examples/evaluate_voc.sh VOC_ROOT  # toy models: checks the plumbing
set -euo pipefail
VOC=${1:?give the VOC root (the folder holding VOCdevkit, VOCdevkit or VOC2012)}
PRESET=${PRESET:-paper}
N=${N:-32}
STEPS=${STEPS:-30}
WORK=${WORK:-voc}

ovdiff sample --vocab voc --models "$PRESET" -n "$N" --steps "$STEPS" -o "$WORK/support" \
  | ovdiff attribute - --models "$PRESET" | ovdiff mask - --models "$PRESET" \
  | ovdiff prototype - --models "$PRESET" -o "$WORK/prototypes" \
  | xargs ovdiff filter-stuff --vocab voc -o "$WORK/banks"
ovdiff segment "$VOC" --dataset voc --bank "$WORK/banks" --models "$PRESET" -o "$WORK/segmentation" > /dev/null
ovdiff score "$WORK/segmentation" "$VOC" --dataset voc --json > "$WORK/score.json"
ovdiff score "$WORK/segmentation" "$VOC" --dataset voc
