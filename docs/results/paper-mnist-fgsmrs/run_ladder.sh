#!/bin/bash
# The Square budget ladder (issue #26, item 1: the gradient-free part's convergence) on the five training seeds'
# paired evaluations: Square with 10,000, 20,000 and 50,000 queries (fresh seeds 1, 2, 3) on the first 500 images
# still robust at eps 0.3 after every committed attack and every earlier rung; then each seed's report (the
# ladder folded into its worst case) and the between-seed table. One thread; resumable: run it again to continue.
# usage: run_ladder.sh [SEED ...]    (default: 0 1 2 3 4; RUNGS=... overrides the rungs)
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONSAFEPATH=1
HERE=docs/results/paper-mnist-fgsmrs
RUNGS=${RUNGS:-10000:1,20000:2,50000:3}
dir() { if [ "$1" = 0 ]; then echo "$HERE"; else echo "$HERE/seed$1"; fi; }
for S in "${@:-0 1 2 3 4}"; do
  for s in $S; do
    D=$(dir "$s")
    .venv/bin/python -m eegsine.bench.experiments.square_ladder --threads 1 --out "$D/eval" --eps 0.3 \
        --rungs "$RUNGS" --model standard="$D/models/standard" --model sine="$D/models/sine"
    .venv/bin/python -m eegsine.bench.experiments.paired_eval report --out "$D/eval" \
        --model standard="$D/models/standard" --model sine="$D/models/sine" > /dev/null
  done
done
.venv/bin/python -m eegsine.bench.experiments.seeds --out "$HERE/seeds" \
    $(for s in 0 1 2 3 4; do echo "--seed $s=$(dir "$s")/eval"; done)
