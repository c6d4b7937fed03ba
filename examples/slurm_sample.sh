#!/usr/bin/env bash
#SBATCH --job-name=ovdiff-sample
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
# Sampling a whole vocabulary across a Slurm job array: each task draws its share of the classes.
# `ovdiff sample` reads SLURM_ARRAY_TASK_ID, _MIN and _COUNT (or _MAX) itself; `--shard K/N` does
# the same by hand. Submit with
#
#   sbatch examples/slurm_sample.sh
#
# Without Slurm, this script runs the four shards one after the other, as the array would:
#
#   PRESET=tiny N=2 STEPS=2 VOCAB=cat,dog,bird,sky,tree bash examples/slurm_sample.sh
#
# VOCAB (default: voc, 20 classes) is the vocabulary to draw; five classes keep a tiny run short.
set -euo pipefail
PRESET=${PRESET:-paper}
N=${N:-32}
STEPS=${STEPS:-30}
WORK=${WORK:-slurm}
VOCAB=${VOCAB:-voc}

if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  ovdiff sample --vocab "$VOCAB" --models "$PRESET" -n "$N" --steps "$STEPS" -o "$WORK/support"
else
  for k in 1 2 3 4; do
    ovdiff sample --vocab "$VOCAB" --models "$PRESET" -n "$N" --steps "$STEPS" -o "$WORK/support" --shard "$k/4"
  done
fi
