#!/bin/bash
# A second training seed of both heads (the same recipe, --seed S: initialisation, held-out split and batch order),
# then the same resumable paired evaluation (eps 0.3 first), one thread; everything under seed<S>/ here.
# usage: run_seed.sh S    (resumable: run it again to continue)
set -euo pipefail
S=${1:?seed}
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONSAFEPATH=1
RUN=runs/paper-mnist-fgsmrs-seed$S
HERE=docs/results/paper-mnist-fgsmrs/seed$S
mkdir -p "$RUN" "$HERE"
for head in standard sine; do
  if [ ! -f "$HERE/models/$head/model.safetensors" ]; then
    t0=$(date +%s)
    .venv/bin/eegsine --threads 1 train classifier --preset paper-mnist-fgsmrs --seed "$S" --heads "$head" --run "$RUN"
    echo "$head train wall s: $(( $(date +%s) - t0 ))" >> "$HERE/train_wall.txt"
    mkdir -p "$HERE/models/$head"
    cp "$RUN/$head/model/config.json" "$RUN/$head/model/model.safetensors" "$RUN/$head/model/provenance.json" \
       "$HERE/models/$head/"
    cp "$RUN/$head/metrics.json" "$HERE/models/$head/train_metrics.json"
    cp "$RUN/$head/train.md" "$HERE/train_$head.md"
  fi
done
.venv/bin/python -m eegsine.bench.experiments.paired_eval run --threads 1 --out "$HERE/eval" \
    --model standard="$HERE/models/standard" --model sine="$HERE/models/sine"
