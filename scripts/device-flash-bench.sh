#!/usr/bin/env bash
# On the GPU machine: the fused bf16 attention tests, then bench/gpu-dilated-attention.ts against the PyTorch
# peers. Logs, the plot and the results section go to $OUT (the source tree there does not come back).
#   bash scripts/device-flash-bench.sh [--no-test] [--quick] [other flags of the benchmark...]
# --no-test skips the tests; --quick stops the benchmark at N = 131072; the other flags go to the benchmark.
# Carry .device (scripts/device-pack.sh) and native/build/longnet_cuda.node.
source scripts/device-setup.sh
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
run_tests=1
args=()
for a in "$@"; do
  if [ "$a" = --no-test ]; then run_tests=0; else args+=("$a"); fi
done
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/torch.txt"
status=0
if [ $run_tests = 1 ]; then
  timeout 300 node --import tsx --test --test-reporter=spec test/cuda-flash-attention.test.ts > "$OUT/test-flash.log" 2>&1
  status=$?
  echo "flash attention tests: exit $status"
  grep -E '^ℹ (tests|pass|fail|skipped)' "$OUT/test-flash.log"
  grep -B2 -A12 'not ok\|✖' "$OUT/test-flash.log" | head -80
fi
node --import tsx bench/gpu-dilated-attention.ts --svg "$OUT/dilated-attention.svg" --section "$OUT/results-section.md" "${args[@]}" \
  2> "$OUT/bench-progress.log" | tee "$OUT/bench-dilated-attention.log"
bench=$?
tail -5 "$OUT/bench-progress.log"
[ $status = 0 ] && status=$bench
exit $status
