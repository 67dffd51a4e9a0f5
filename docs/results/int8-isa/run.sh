#!/usr/bin/env bash
# INT8 accuracy of the tiny pipeline's models per quantization target, on this CPU and on an
# emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell-v4: no AVX-512, no VNNI).
# Needs a finished `make demo` (runs/tiny) and qemu-user (`make qemu`). Run from the repository root.
set -euo pipefail
out=docs/results/int8-isa
export OMP_NUM_THREADS=1
for target in portable x86-vnni; do
  b=runs/tiny/bundle-$target
  .venv/bin/eegsine --threads 2 export --classifier runs/tiny/classifier/sine --eeg-run runs/tiny/diffusion \
      --out "$b" --int8 --target "$target" --overwrite > "$out/export-$target.log" 2>&1 || true  # a failed gate is a result
  qemu-x86_64 -cpu Haswell-v4 .venv/bin/python -m eegsine.commands.verify "$b" --threads 1 \
      > "$out/verify-emulated-avx2-$target.txt" 2>/dev/null || true
  .venv/bin/eegsine-verify "$b" --threads 1 --no-record > "$out/verify-native-$target.txt" || true
  cp "$b/verifications.json" "$out/verifications-$target.json"
done
.venv/bin/python "$out/table.py" "$out"
