#!/usr/bin/env bash
# On the GPU machine: each pattern of the paper's schedule timed alone at one N (B=1, H=12, D=64, causal),
# then the whole schedule, for every build in FLASH_BINS (native/build/check; build with
# scripts/build-flash-check.sh, FLASH_CHECK_NAME naming each). Builds take turns within each line, so that
# the card's drift falls on all of them alike. Lines go to $OUT/flash-patterns.log as they come.
#   [FLASH_BINS="flash_check other"] [FLASH_TIME_N=1048576] [FLASH_TIME_REPEAT=2] bash scripts/device-flash-patterns.sh
set -uo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/native/build/check"
log="${OUT:-/tmp}/flash-patterns.log"
n=${FLASH_TIME_N:-1048576}
status=0
for _ in $(seq "${FLASH_TIME_REPEAT:-1}"); do
  for pattern in "2048 1" "4096 2" "8192 4" "16384 6" "32768 12" "2048 1 4096 2 8192 4 16384 6 32768 12"; do
    for bin in ${FLASH_BINS:-flash_check}; do
      printf '%s (%s): ' "$bin" "$pattern" | tee -a "$log"
      # shellcheck disable=SC2086 # the pattern is a list of numbers
      timeout 60 "$dir/$bin" time "$n" 12 64 1 $pattern 2>&1 | tee -a "$log"
      [ "${PIPESTATUS[0]}" = 0 ] || { echo "FAILED: $bin $pattern" | tee -a "$log"; status=1; }
    done
  done
done
exit $status
