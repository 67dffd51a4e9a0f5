#!/bin/bash
# Per-example cross-check of eegsine's AutoAttack against the authors' reference (pyautoattack 0.2.0 = fra31/auto-attack)
# on the first N images of the evaluation subset at eps 0.3, both heads, one thread -> aa_crosscheck.json here.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONSAFEPATH=1
HERE=docs/results/paper-mnist-fgsmrs
t0=$(date +%s)
.venv/bin/python -m eegsine.bench.experiments.aa_crosscheck --model standard="$HERE/models/standard" --model sine="$HERE/models/sine" \
    --n "${1:-100}" --eps 0.3 --out "$HERE/aa_crosscheck.json"
echo "crosscheck wall s: $(( $(date +%s) - t0 ))"
