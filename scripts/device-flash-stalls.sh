#!/usr/bin/env bash
# On the GPU machine: why the fused kernels' warps stall (Nsight Compute's per-reason stall ratios), for
# one launch each at N = 131072 with the paper's schedule. Build first with scripts/build-flash-check.sh.
set -uo pipefail
bin="$(cd "$(dirname "$0")/.." && pwd)/native/build/check/flash_check"
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || echo ncu)
for kernel in ${FLASH_KERNELS:-backward_kernel forward_kernel}; do
  echo "== $kernel"
  timeout 120 "$ncu" --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed.sum" \
    -k "regex:$kernel" -c 1 "$bin" time 131072 12 64 1 2048 1 4096 2 8192 4 16384 6 32768 12 2>&1 |
    grep -vE "^==PROF==" | awk '$NF+0 > 0.05 || /hmma|bank|inst_executed/' | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | tee -a "${OUT:-/tmp}/stalls.txt"
done
