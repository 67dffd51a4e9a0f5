#!/bin/bash
# Evaluate both heads of --preset paper-mnist-fgsmrs (models/ beside this file) on the same 1,000 MNIST test
# images (AutoAttack on the first 500), one thread, chunk by chunk; every (head, attack, eps, 100-image chunk)
# result is cached under eval/cache/ (atomic writes), so re-running this script continues where a killed run
# stopped, on this machine or on another one with the committed cache. Writes eval/robustness.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONSAFEPATH=1
HERE=docs/results/paper-mnist-fgsmrs
t0=$(date +%s)
.venv/bin/python -m eegsine.bench.experiments.paired_eval run --threads 1 --out "$HERE/eval" \
    --model standard="$HERE/models/standard" --model sine="$HERE/models/sine" "$@"
echo "$(date -u +%FT%TZ) eval invocation wall s: $(( $(date +%s) - t0 ))" >> "$HERE/eval/wall.txt"
