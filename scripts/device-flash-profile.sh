#!/usr/bin/env bash
# On the GPU machine: Nsight Compute sections for one launch each of the fused forward and backward
# kernels (the paper's schedule, first pattern, N = 131072). Build first with scripts/build-flash-check.sh.
set -uo pipefail
bin="$(cd "$(dirname "$0")/.." && pwd)/native/build/check/flash_check"
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || echo ncu)
sections=(--section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis
  --section MemoryWorkloadAnalysis --section SchedulerStats --section LaunchStats)
for kernel in forward_kernel backward_kernel; do
  timeout 120 "$ncu" "${sections[@]}" -k "regex:$kernel" -c 1 "$bin" time 131072 12 64 1 2048 1 4096 2 8192 4 16384 6 32768 12 \
    2>&1 | grep -vE "^==PROF==|^ *-+ *$" | tee "${OUT:-/tmp}/ncu-$kernel.txt" | grep -E "Throughput|Occupancy|Stall|Registers|Pipe|Issue|Eligible|Active Warps|Duration|Bank|Shared|warp|Warp Cycles" | head -60
done
