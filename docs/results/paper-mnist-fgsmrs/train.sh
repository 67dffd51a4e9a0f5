#!/bin/bash
# Train both heads of --preset paper-mnist-fgsmrs one after the other, one thread; resumable (a killed
# training continues from its last checkpoint when this script is run again; a finished one only
# re-writes its model folder). Then copy each model folder and its training report here to be committed.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONSAFEPATH=1
RUN=runs/paper-mnist-fgsmrs
HERE=docs/results/paper-mnist-fgsmrs
mkdir -p "$RUN"
for head in standard sine; do
  t0=$(date +%s)
  .venv/bin/eegsine --threads 1 train classifier --preset paper-mnist-fgsmrs --heads "$head" --run "$RUN"
  echo "$head train wall s (this invocation): $(( $(date +%s) - t0 ))" >> "$RUN/train_wall.txt"
  mkdir -p "$HERE/models/$head"
  cp "$RUN/$head/model/config.json" "$RUN/$head/model/model.safetensors" "$RUN/$head/model/provenance.json" \
     "$HERE/models/$head/"
  cp "$RUN/$head/train.md" "$HERE/train_$head.md"
  cp "$RUN/$head/metrics.json" "$HERE/models/$head/train_metrics.json"
  [ -f "$RUN/$head/curves.png" ] && cp "$RUN/$head/curves.png" "$HERE/curves_$head.png"
done
