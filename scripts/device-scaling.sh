#!/usr/bin/env bash
# On a GPU machine with 4 or 8 GPUs (H100 80 GB or H200): the sequence-parallel attention of the library over
# NCCL, as training uses it, in about 9 minutes in all on 4 GPUs (bench/gpu-scaling.ts says what each mode
# measures); the 8-GPU steps run only where 8 GPUs are (set BUDGET higher there):
#   1. equality with one GPU (bench/gpu-sequence-parallel.ts check) on 8, 4 and 2 ranks;
#   2. weak scaling at 2^21 tokens a GPU on 1, 2, 4 and 8 GPUs (forward+backward);
#   3. bytes exchanged a GPU on 2, 4 and 8 GPUs over several N;
#   4. the largest sequence (forward+backward) on 1 and on the most GPUs;
#   5. the paper's Figure 5: forward latency from 8K on 1, 2, 4 and 8 GPUs, and dense FlashAttention (PyTorch) on 1;
#   6. scripts/device-train-parallel.sh check (2 GPUs: CUDA_VISIBLE_DEVICES=0,1).
# Every step has its own time limit, cut to what is left of the overall budget (BUDGET seconds, 540 by
# default); output is printed as it comes and logged to $OUT, with the JSON results (scaling-*.json,
# sp-check-P*.json) that `bench/gpu-scaling.ts record` turns into a section of bench/RESULTS.md and the plot.
# Run scripts/device-pack.sh here first; carry .device and native/build/longnet_cuda.node. Then, there:
#   bash scripts/device-scaling.sh [steps...]      (steps: check weak bytes largest fig5 train; all by default)
# Attention precision: fp32 (PRECISION=bf16 to change it; the cross-rank kernels are float32 either way).
start=$SECONDS
source scripts/device-setup.sh
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export OUT NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
BUDGET=${BUDGET:-540}
PRECISION=${PRECISION:-fp32}
want=$(sed -n 's/^export const ABI_VERSION = \([0-9]*\);/\1/p' src/backend/cuda/native.ts)
have=$(node -p "require('./native/build/longnet_cuda.node').abiVersion" 2>/dev/null)
if [ "$have" != "$want" ]; then
  echo "the carried addon has ABI ${have:-?}, this tree expects $want: building it"
  timeout 300 node scripts/build-native.mjs --jobs "$(nproc)" 2>&1 | tail -5 || exit 1
fi
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee "$OUT/torch.txt"

status=0
N="node --import tsx"
LAUNCH="$N src/cli/main.ts launch --master-port 0 --nproc-per-node"
S="bench/gpu-scaling.ts"

# step LIMIT LOG COMMAND...: runs it with min(LIMIT, what is left of the budget) seconds, output to the terminal and $OUT/LOG
step() {
  local limit=$1 log=$2
  shift 2
  local left=$((BUDGET - (SECONDS - start) - 5))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "== SKIPPED (budget spent): $*" | tee "$OUT/$log"
    status=1
    return 1
  fi
  echo "== [$((SECONDS - start)) s] $* (limit $limit s)" | tee "$OUT/$log"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  echo "== exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/$log"
  [ "$rc" = 0 ] || status=1
  return "$rc"
}

steps=${*:-check weak bytes largest fig5 train}
has() { [[ " $steps " == *" $1 "* ]]; }
gpus=$(nvidia-smi -L | wc -l)
# on P ranks: the step when the machine has P GPUs, else a line saying it was left out
on() {
  local p=$1
  shift
  if [ "$p" -gt "$gpus" ]; then echo "== left out (needs $p GPUs, this machine has $gpus): $*"; return 0; fi
  "$@"
}

if has check; then
  on 8 step 120 sp-check-P8.log $LAUNCH 8 -- node --import tsx bench/gpu-sequence-parallel.ts check
  on 4 step 90 sp-check-P4.log $LAUNCH 4 -- node --import tsx bench/gpu-sequence-parallel.ts check
  step 60 sp-check-P2.log $LAUNCH 2 -- node --import tsx bench/gpu-sequence-parallel.ts check
fi
if has weak; then
  step 90 scaling-weak-P1.log $N $S weak --precision "$PRECISION"
  step 90 scaling-weak-P2.log $LAUNCH 2 -- node --import tsx $S weak --precision "$PRECISION"
  on 4 step 90 scaling-weak-P4.log $LAUNCH 4 -- node --import tsx $S weak --precision "$PRECISION"
  on 8 step 100 scaling-weak-P8.log $LAUNCH 8 -- node --import tsx $S weak --precision "$PRECISION"
fi
if has bytes; then
  step 75 scaling-bytes-P2.log $LAUNCH 2 -- node --import tsx $S bytes --precision "$PRECISION" --lengths 131072,524288,2097152,4194304
  on 4 step 75 scaling-bytes-P4.log $LAUNCH 4 -- node --import tsx $S bytes --precision "$PRECISION" --lengths 131072,524288,2097152,8388608
  on 8 step 90 scaling-bytes-P8.log $LAUNCH 8 -- node --import tsx $S bytes --precision "$PRECISION" --lengths 131072,524288,2097152,16777216
fi
if has largest; then
  step 110 scaling-largest-P1.log $N $S largest --gpus 1 --precision "$PRECISION" --trial-timeout 45 --time-limit 100
  [ "$gpus" -lt 4 ] && on 2 step 120 scaling-largest-P2.log $N $S largest --gpus 2 --precision "$PRECISION" --trial-timeout 50 --time-limit 110
  [ "$gpus" -lt 8 ] && on 4 step 150 scaling-largest-P4.log $N $S largest --gpus 4 --precision "$PRECISION" --trial-timeout 60 --time-limit 140
  on 8 step 180 scaling-largest-P8.log $N $S largest --gpus 8 --precision "$PRECISION" --trial-timeout 70 --time-limit 170
fi
if has fig5; then
  step 75 scaling-fig5-P1.log $N $S fig5 --precision "$PRECISION"
  step 50 scaling-fig5-P2.log $LAUNCH 2 -- node --import tsx $S fig5 --precision "$PRECISION"
  on 4 step 50 scaling-fig5-P4.log $LAUNCH 4 -- node --import tsx $S fig5 --precision "$PRECISION"
  on 8 step 60 scaling-fig5-P8.log $LAUNCH 8 -- node --import tsx $S fig5 --precision "$PRECISION"
fi
if has train; then
  # its own log is $OUT/parallel-check.log
  CUDA_VISIBLE_DEVICES=0,1 step 200 train-parallel-check.log bash scripts/device-train-parallel.sh check
fi

echo "== summary [$((SECONDS - start)) s]"
grep -h -E '^(check: P=|headline:)' "$OUT"/sp-check-P*.log "$OUT"/scaling-*.log 2>/dev/null
grep -h 'losses compared' "$OUT/parallel-check.log" 2>/dev/null
echo "device-scaling: $([ $status = 0 ] && echo PASS || echo FAIL) in $((SECONDS - start)) s"
exit $status
