#!/bin/bash
# evaluate both heads in parallel (one thread each); results cached per (attack, eps) under robustness/cache
cd "$(dirname "$0")/../../.."  # the repository root, wherever it is checked out
export OMP_NUM_THREADS=1
start=$(date +%s)
.venv/bin/eegsine --threads 1 attack --preset paper-mnist --run runs/paper-mnist/standard --out runs/paper-mnist/robustness > runs/paper-mnist/eval_standard.log 2>&1 &
.venv/bin/eegsine --threads 1 attack --preset paper-mnist --run runs/paper-mnist/sine --transfer-from runs/paper-mnist/standard --out runs/paper-mnist/robustness > runs/paper-mnist/eval_sine.log 2>&1 &
wait
echo "parallel eval wall s: $(( $(date +%s) - start ))" > runs/paper-mnist/eval_wall.txt
