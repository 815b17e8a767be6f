#!/usr/bin/env bash
# On the GPU machine: the CUDA tests under compute-sanitizer (memcheck: out-of-bounds and misaligned
# accesses; racecheck: shared-memory races in the attention kernels). Logs go to $OUT.
#   source scripts/device-setup.sh && bash scripts/device-sanitize.sh
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
status=0
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20"
for f in test/cuda-elementwise.test.ts test/cuda-nn.test.ts test/cuda-matmul.test.ts; do
  echo "== memcheck $f"
  $SAN --tool memcheck node --import tsx "$f" > "$OUT/memcheck-$(basename "$f" .test.ts).log" 2>&1 || status=1
  grep -E '^# (pass|fail)|ERROR SUMMARY|^not ok' "$OUT/memcheck-$(basename "$f" .test.ts).log"
done
PATTERN='N=150|N=97|N=45|D=136|D=256|N=100'
echo "== memcheck attention ($PATTERN)"
$SAN --tool memcheck node --import tsx --test-name-pattern="$PATTERN" test/cuda-attention.test.ts > "$OUT/memcheck-attention.log" 2>&1 || status=1
grep -E '^# (pass|fail)|ERROR SUMMARY|^not ok' "$OUT/memcheck-attention.log"
echo "== racecheck attention (N=150|D=256)"
$SAN --tool racecheck node --import tsx --test-name-pattern='N=150|D=256' test/cuda-attention.test.ts > "$OUT/racecheck-attention.log" 2>&1 || status=1
grep -E '^# (pass|fail)|RACECHECK SUMMARY|ERROR SUMMARY|^not ok' "$OUT/racecheck-attention.log"
exit $status
