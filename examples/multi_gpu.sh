#!/usr/bin/env bash
# Several GPUs on one machine: one process per GPU, each pinned to its GPU with CUDA_VISIBLE_DEVICES
# and given its part of the work as torchrun would, with RANK and WORLD_SIZE (which `--shard` reads).
#   1. per process: `sample` of its part of the classes, piped through attribute, mask and prototype;
#   2. once: `filter-stuff` over every class's prototypes, the banks of the whole vocabulary;
#   3. per process: `segment` of its part of the images into one folder;
#   4. per process: `score --json` of its part of the label maps; `score --merge` adds them up.
#
#   IMAGES=photos GT=labels bash examples/multi_gpu.sh     # every GPU `nvidia-smi -L` lists (or CUDA_VISIBLE_DEVICES)
#   PRESET=tiny N=2 STEPS=2 GPUS=2 VOCAB=cat,sky SHORT_SIDE=64 IMAGES=DIR GT=DIR bash examples/multi_gpu.sh
#
# The second line runs two processes on a CPU with toy models (meaningless output): it checks the plumbing.
#
# GPUS sets the number of processes (default: one per visible GPU; on a machine without one,
# GPUS processes share the CPU). VOCAB (default: voc) is the vocabulary, IMAGES (default:
# examples/data) the folder of test images (.png/.jpg/.jpeg), GT a folder of ground-truth label maps
# named like the images (without it nothing is scored), SHORT_SIDE (default: 448) the size test images
# are segmented at, WORK (default: multi-gpu) the output folder.
# Each process's stderr goes to WORK/rankK/*.log; the script stops when any process fails.
set -euo pipefail
PRESET=${PRESET:-paper}
N=${N:-32}
STEPS=${STEPS:-30}
WORK=${WORK:-multi-gpu}
VOCAB=${VOCAB:-voc}
IMAGES=${IMAGES:-$(dirname "$0")/data}
GT=${GT:-}
SHORT_SIDE=${SHORT_SIDE:-448}

if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  echo "multi_gpu.sh: run it as one job, not in a job array (each task would sample only its part)" >&2
  exit 2
fi
unset RANK WORLD_SIZE LOCAL_RANK  # this script gives each process its RANK; the other stages must see none

# The GPUs to spread over: those CUDA_VISIBLE_DEVICES names, else those nvidia-smi lists, else none.
if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
  IFS=, read -ra VISIBLE <<< "$CUDA_VISIBLE_DEVICES"
else
  mapfile -t VISIBLE < <(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9][0-9]*\):.*/\1/p' || true)
fi
if [ "${#VISIBLE[@]}" -gt 0 ]; then DEVICE=auto; else DEVICE=cpu; fi
PROCS=${GPUS:-${#VISIBLE[@]}}
case $PROCS in ''|*[!0-9]*) echo "multi_gpu.sh: GPUS=$PROCS is not a number of processes" >&2; exit 2 ;; esac
[ "$PROCS" -ge 1 ] || PROCS=1
# The processes share the CPU's cores (image decoding, k-means on the CPU, or all the work without a
# GPU), rather than each starting a thread per core (torchrun likewise sets OMP_NUM_THREADS).
CORES=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((CORES > PROCS ? CORES / PROCS : 1))}
# nvidia-smi numbers GPUs in PCI bus order; CUDA numbers them fastest first unless told otherwise
export CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}
echo "multi_gpu.sh: $PROCS processes on ${#VISIBLE[@]} GPU(s), --device $DEVICE" >&2

# per_process STEP: run the function STEP once per process K in the background (its GPU pinned, its
# stderr in WORK/rankK/STEP.log), wait for all of them, and stop if any failed.
per_process() {
  local step=$1 k pids=() failed=()
  for ((k = 0; k < PROCS; k++)); do
    mkdir -p "$WORK/rank$k"
    (
      if [ "${#VISIBLE[@]}" -gt 0 ]; then export CUDA_VISIBLE_DEVICES=${VISIBLE[k % ${#VISIBLE[@]}]}; fi
      "$step" "$k"
    ) 2> "$WORK/rank$k/$step.log" &
    pids+=($!)
  done
  for k in "${!pids[@]}"; do wait "${pids[$k]}" || failed+=("$k"); done
  if [ "${#failed[@]}" -gt 0 ]; then
    for k in "${failed[@]}"; do tail -n 3 "$WORK/rank$k/$step.log" >&2; done
    echo "multi_gpu.sh: $step failed in process(es) ${failed[*]}; logs in $WORK/rank*/$step.log" >&2
    exit 1
  fi
}

prototypes() {  # process K: its part of the classes, from sampling to prototypes
  RANK=$1 WORLD_SIZE=$PROCS ovdiff sample --vocab "$VOCAB" --models "$PRESET" -n "$N" --steps "$STEPS" \
      --device "$DEVICE" -o "$WORK/support" \
    | ovdiff attribute - --models "$PRESET" --device "$DEVICE" \
    | ovdiff mask - --models "$PRESET" --device "$DEVICE" \
    | ovdiff prototype - --models "$PRESET" --device "$DEVICE" -o "$WORK/prototypes" > "$WORK/rank$1/prototypes.txt"
}

segment() {  # process K: its part of the images (all processes list them in the same order)
  RANK=$1 WORLD_SIZE=$PROCS ovdiff segment - --bank "$WORK/banks" --models "$PRESET" --device "$DEVICE" \
    --short-side "$SHORT_SIDE" -o "$WORK/segmentation" < "$WORK/images.txt" > "$WORK/rank$1/label-maps.txt"
}

score() {  # process K: its part of the label maps that have a ground truth (counts add up)
  RANK=$1 WORLD_SIZE=$PROCS ovdiff score "$WORK/segmentation" "$GT" --json > "$WORK/rank$1/score.json"
}

# each process's record of this run, by rank (folders of an earlier run with more processes are not read)
mine() { local k; for ((k = 0; k < PROCS; k++)); do printf '%s\0' "$WORK/rank$k/$1"; done; }

# an interrupted script stops its processes too, not only itself
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
mkdir -p "$WORK"
per_process prototypes
mine prototypes.txt | xargs -0 cat | ovdiff filter-stuff - --vocab "$VOCAB" -o "$WORK/banks" > /dev/null
find "$IMAGES" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) | LC_ALL=C sort \
  > "$WORK/images.txt"
per_process segment
if [ -z "$GT" ]; then
  echo "$(mine label-maps.txt | xargs -0 cat | wc -l) label maps in $WORK/segmentation (no GT given: not scored)"
  exit 0
fi
per_process score
mine score.json | xargs -0 ovdiff score --merge --json > "$WORK/score.json"
mine score.json | xargs -0 ovdiff score --merge
