#!/usr/bin/env bash
# On the GPU machine, after `source scripts/device-setup.sh`: Nsight Compute's view of kernels that
# bench/gpu-ops.ts runs (throughput against the card's peaks, pipe use, occupancy, the warps' stalls),
# one launch of each kernel whose mangled name matches a pattern (after 5 launches of it, warmed up).
#   bash scripts/device-kernel-profile.sh [PATTERN ...]      (default: the cross-entropy and layer-norm backward kernels)
# One report a pattern in $OUT/ncu-<n>.txt. Clocks are left as the card runs them.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
patterns=("$@")
[ ${#patterns[@]} = 0 ] && patterns=(cross_entropy_with_grad_smem 'layer_norm_dx_rows_kernel.*Li128ELi3ELb1ELb1' 'layer_norm_dx_rows_kernel.*Li32ELi3ELb1ELb0')
n=0
for p in "${patterns[@]}"; do
  n=$((n + 1))
  ncu --clock-control none --kernel-name-base mangled --kernel-name "regex:$p" --launch-skip 5 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section Occupancy \
    --section WarpStateStats --section SchedulerStats node --import tsx bench/gpu-ops.ts > "$OUT/ncu-$n.txt" 2>&1
  echo "$p: exit $?, $(grep -cE '^\s+[A-Za-z].*[0-9]$' "$OUT/ncu-$n.txt") metric lines"
done
