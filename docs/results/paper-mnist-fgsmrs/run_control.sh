#!/bin/bash
# The control at Wong et al.'s exact recipe: both heads trained on all 60,000 MNIST training images
# (--val-fraction 0) and the last epoch's weights kept (--keep last), training seed S (default 0, as models/);
# then the same resumable paired evaluation as eval/ (the same 1,000 test images, AutoAttack on the first 500),
# one thread. Seed 0 under control/, seed S under control/seedS/. TRAIN_ONLY=1: stop after training.
# usage: run_control.sh [S]    (resumable: run it again to continue)
set -euo pipefail
S=${1:-0}; shift || true  # the rest goes to the paired evaluation
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONSAFEPATH=1
if [ "$S" = 0 ]; then RUN=runs/paper-mnist-fgsmrs-control; HERE=docs/results/paper-mnist-fgsmrs/control
else RUN=runs/paper-mnist-fgsmrs-control-seed$S; HERE=docs/results/paper-mnist-fgsmrs/control/seed$S; fi
mkdir -p "$RUN" "$HERE"
for head in standard sine; do
  if [ ! -f "$HERE/models/$head/model.safetensors" ]; then
    t0=$(date +%s)
    .venv/bin/eegsine --threads 1 train classifier --preset paper-mnist-fgsmrs --val-fraction 0 --keep last \
        --seed "$S" --heads "$head" --run "$RUN"
    echo "$head train wall s: $(( $(date +%s) - t0 ))" >> "$HERE/train_wall.txt"
    mkdir -p "$HERE/models/$head"
    cp "$RUN/$head/model/config.json" "$RUN/$head/model/model.safetensors" "$RUN/$head/model/provenance.json" \
       "$HERE/models/$head/"
    cp "$RUN/$head/metrics.json" "$HERE/models/$head/train_metrics.json"
    cp "$RUN/$head/train.md" "$HERE/train_$head.md"
  fi
done
[ "${TRAIN_ONLY:-0}" = 1 ] && exit 0
.venv/bin/python -m eegsine.bench.experiments.paired_eval run --threads 1 --out "$HERE/eval" \
    --model standard="$HERE/models/standard" --model sine="$HERE/models/sine" "$@"
