#!/usr/bin/env bash
# On the GPU machine: every CUDA test, then (with `bench`) the benchmarks. Full logs go to $OUT.
#   source scripts/device-setup.sh && bash scripts/device-test.sh [bench]
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
node --import tsx --test --test-reporter=spec test/cuda-*.test.ts 2>&1 | tee "$OUT/test.log"
status=$?
if [ "${1:-}" = bench ]; then
  node --import tsx bench/gpu-matmul.ts 2>&1 | tee "$OUT/bench-matmul.log"
  node --import tsx bench/gpu-attention.ts 2>&1 | tee "$OUT/bench-attention.log"
  node --import tsx bench/gpu-ops.ts 2>&1 | tee "$OUT/bench-ops.log"
fi
exit $status
