#!/usr/bin/env bash
# On the GPU machine, after `source scripts/device-setup.sh`: the 32K training step of this tree against a
# base tree, runs alternated on the same card (its power-capped clock drifts from run to run). The base is
# another commit's tree with its own built addon, packed here first:
#   git archive BASE | tar x -C /tmp/b; cp native/build/longnet_cuda.node /tmp/b/native/build/ (BASE's build)
#   tar cJf .device/base-tree.tar.xz -C /tmp/b .
# and carried with .device. AB_ROUNDS (default 2) pairs of runs, BENCH_STEPS (default 30) steps each; logs in $OUT.
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
base=/tmp/base-tree
rm -rf "$base" && mkdir -p "$base" && tar xJf .device/base-tree.tar.xz -C "$base" || exit 1
ln -sfn "$PWD/node_modules" "$base/node_modules"
source scripts/device-corpus.sh >/dev/null
run() {  # run SIDE ROUND: one bench run of this tree (head) or the base
  local dir=$PWD
  [ "$1" = base ] && dir=$base
  (cd "$dir" && node --import tsx bench/gpu-train.ts --data "$corpus" --token-cache /tmp/tok --lengths 32768 \
    --tokenizers cl100k_base --precisions bf16-act --steps "${BENCH_STEPS:-30}") > "$OUT/ab-$1-$2.log" 2>&1
  local steps
  steps=$(grep -oE 'steps [0-9, ]+ ms' "$OUT/ab-$1-$2.log" | grep -oE '[0-9]+' | tr '\n' ' ')
  echo "$1 round $2: mean $(echo "$steps" | awk '{s=0; for(i=1;i<=NF;i++) s+=$i; if (NF) printf "%.2f", s/NF}') ms;" \
    "$(grep -oE 'card over the timed steps: .*' "$OUT/ab-$1-$2.log")"
}
for r in $(seq "${AB_ROUNDS:-2}"); do
  # the order alternates too, so that neither side always runs on the card warmed by the other
  if [ $((r % 2)) = 1 ]; then run head "$r"; run base "$r"; else run base "$r"; run head "$r"; fi
done
