#!/usr/bin/env bash
# On the GPU machine: the fused kernels against the exact float32 ones on awkward shapes, then timings
# of the paper's schedule (B=1, H=12, D=64, causal). Build first with scripts/build-flash-check.sh.
# Every run has its own time limit, and lines are printed as they come (and kept in $OUT/flash-check.log).
#   [FLASH_VARIANTS="default wg2p"] [FLASH_BINS="flash_check flash_check_x"] [FLASH_TIME_N="1048576"]
#   [FLASH_TIME_REPEAT=2] [FLASH_SKIP_CHECKS=1] bash scripts/device-flash-check.sh
# FLASH_BINS: builds of flash_check in native/build/check to check and time in turn (e.g. one built with
# other FLASH_CHECK_NVCC_FLAGS); each is crossed with every backward variant.
set -uo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/native/build/check"
log="${OUT:-/tmp}/flash-check.log"
paper="2048 1 4096 2 8192 4 16384 6 32768 12"
status=0
run() { timeout 60 "$dir/$bin" "$@" 2>&1 | tee -a "$log"; [ "${PIPESTATUS[0]}" = 0 ] || { echo "FAILED: $*" | tee -a "$log"; status=1; }; }
# FLASH_VARIANTS: backward shapes (LONGNET_FLASH_BACKWARD values; "default" is the launcher's choice), each
# checked and timed in turn; FLASH_TIME_REPEAT: how many times the timings go round the variants.
variants=${FLASH_VARIANTS:-default}
use_variant() { if [ "$1" = default ]; then unset LONGNET_FLASH_BACKWARD; else export LONGNET_FLASH_BACKWARD=$1; fi; }
for bin in ${FLASH_BINS:-flash_check}; do for variant in $variants; do
  [ "${FLASH_SKIP_CHECKS:-0}" = 1 ] && break 2
  echo "== checks, $bin, backward: $variant" | tee -a "$log"
  use_variant "$variant"
  run wgmma  # the wgmma wrappers on one warpgroup (skipped on GPUs other than Hopper)
  run check 1000 4 64 1 128 1 256 2 512 4
  run check 1000 4 64 0 128 1 256 2 512 4
  run check 1000 4 64 1 256 2 128 1 512 4  # a first pattern of dilation 2: dk and dv are cleared, not stored afresh
  run check 777 3 32 1 64 1 128 2
  run check 777 3 32 0 128 2 64 1
  run check 2000 2 128 1 256 1 1024 4
  run check 2000 2 128 0 256 1 1024 4
  run check 4100 12 64 1 512 1 1024 2 2048 4 4096 6 8192 12
  run check 300 5 64 0 1000 1
  run check 2000 2 64 1 2000 1
  run check 40000 12 64 1 $paper
done; done
for n in ${FLASH_TIME_N:-32768 131072 524288 1048576}; do
  for _ in $(seq "${FLASH_TIME_REPEAT:-1}"); do
    for bin in ${FLASH_BINS:-flash_check}; do for variant in $variants; do
      echo "$bin, backward: $variant" | tee -a "$log"
      use_variant "$variant"
      run time "$n" 12 64 1 $paper
    done; done
  done
done
exit $status
