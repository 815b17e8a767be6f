#!/usr/bin/env bash
# On a GPU machine with 2 GPUs: the CUDA tests, then sequence-parallel attention over NCCL on 2 ranks against
# one GPU (check), then forward+backward timings on 1 and 2 GPUs. Logs go to $OUT.
#   bash scripts/device-sequence-parallel.sh [tokens-per-gpu ...]
# Carry .device (scripts/device-pack.sh) and native/build/longnet_cuda.node.
source scripts/device-setup.sh
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
launch() { node --import tsx src/cli/main.ts launch --nproc-per-node 2 --master-port 0 -- node --import tsx bench/gpu-sequence-parallel.ts "$@"; }
timeout 180 node --import tsx --test --test-reporter=spec test/cuda-*.test.ts > "$OUT/gpu-tests.log" 2>&1
echo "cuda tests: exit $?"; grep -E '^# (tests|pass|fail|skipped)' "$OUT/gpu-tests.log"; grep -B2 -A12 'not ok\|✖' "$OUT/gpu-tests.log" | head -60
timeout 120 bash -c "$(declare -f launch); launch check" 2>&1 | tee "$OUT/sp-check.log"
for l in "${@:-1048576}"; do
  LONGNET_SP_TOKENS=$l timeout 120 node --import tsx bench/gpu-sequence-parallel.ts time 2>&1 | tee -a "$OUT/sp-time.log"
  LONGNET_SP_TOKENS=$l timeout 120 bash -c "$(declare -f launch); launch time" 2>&1 | tee -a "$OUT/sp-time.log"
done
