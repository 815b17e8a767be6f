#!/usr/bin/env bash
# On a GPU machine with 4 GPUs (H200, about 139 GiB each): one dilated attention layer's forward over a
# 2^30 = 1,073,741,824-token sequence (bench/gpu-billion-forward.ts). check: the sequence-parallel result
# against each GPU's single-device result of the whole sequence, on 2 and on 4 GPUs; run: the 1B-token
# forward on 4 GPUs (time, memory and bytes exchanged per GPU). When 2^30 tokens do not fit (a rank prints
# "does not fit"), the largest aligned length below, 2^29, runs instead and the log says so. Then one GPU
# with the same tokens a GPU (2^28), for comparison.
# Run scripts/device-pack.sh here first; carry .device and native/build/longnet_cuda.node (rebuilt there
# when its ABI is not the one src/backend/cuda/native.ts expects). Then, there:
#   bash scripts/device-billion-forward.sh [check] [run]        (both when no mode is given)
# Every command has its own time limit; lines are printed as they come; logs and JSON results go to $OUT.
source scripts/device-setup.sh
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
want=$(sed -n 's/^export const ABI_VERSION = \([0-9]*\);/\1/p' src/backend/cuda/native.ts)
have=$(node -p "require('./native/build/longnet_cuda.node').abiVersion" 2>/dev/null)
if [ "$have" != "$want" ]; then
  echo "the carried addon has ABI ${have:-?}, this tree expects $want: building it"
  timeout 400 node scripts/build-native.mjs --jobs "$(nproc)" 2>&1 | tail -5 || exit 1
fi
nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv,noheader

status=0
# step LIMIT LOG NPROC ARGS...: one launch, its output on the terminal and in $OUT/LOG; returns its status
step() {
  local limit=$1 log=$2 nproc=$3
  shift 3
  echo "== $nproc GPU(s): gpu-billion-forward.ts $* (limit $limit s)" | tee "$OUT/$log"
  timeout -k 10 "$limit" node --import tsx src/cli/main.ts launch --nproc-per-node "$nproc" --master-port 0 -- \
    node --import tsx bench/gpu-billion-forward.ts "$@" 2>&1 | tee -a "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  echo "== exit $rc" | tee -a "$OUT/$log"
  return "$rc"
}

modes=${*:-check run}
if [[ " $modes " == *" check "* ]]; then
  step 150 billion-check-P2.log 2 check || status=1
  step 150 billion-check-P4.log 4 check || status=1
fi
if [[ " $modes " == *" run "* ]]; then
  if ! step 240 billion-run-P4.log 4 run; then
    status=1
    if grep -q '^does not fit' "$OUT/billion-run-P4.log"; then
      echo "2^30 tokens do not fit on these GPUs: the largest aligned length below is 2^29 = 536,870,912 tokens"
      step 180 billion-run-P4-2e29.log 4 run --tokens 536870912
    fi
  fi
  # the same tokens a GPU on one GPU (2^28, its own schedule up to (2^28, 2^17)): what the exchanges cost
  step 150 billion-run-P1-2e28.log 1 run --tokens 268435456 || status=1
fi
grep -h -E '^(check:|1B-token forward:|forward:|does not fit)' "$OUT"/billion-*.log 2>/dev/null
echo "device-billion-forward: $([ $status = 0 ] && echo PASS || echo FAIL)"
exit $status
