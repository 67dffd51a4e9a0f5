#!/bin/bash
# The whole job, resumable: training of both heads (train.sh), then the evaluation (run_eval.sh).
# Start it in the background with one thread:
#   setsid nohup docs/results/paper-mnist-fgsmrs/run_all.sh > runs/paper-mnist-fgsmrs.log 2>&1 &
set -euo pipefail
HERE="$(dirname "$0")"
if [ ! -f "$HERE/models/sine/model.safetensors" ]; then "$HERE/train.sh"; fi
"$HERE/run_eval.sh" "$@"
