#!/usr/bin/env bash
# On a GPU machine with 2 GPUs: sequence x data parallel training (`longnet train --seq-parallel P` under
# `longnet launch`) against one GPU on the same global batch. Run scripts/device-pack.sh here first and
# carry .device and native/build/longnet_cuda.node; then, there:
#   bash scripts/device-train-parallel.sh [check] [speed]        (both when no mode is given)
# check: the tiny model, 8 steps at 4096 tokens, global batch 2, fp32 products: on 1 GPU, on 2 GPUs with
#        --seq-parallel 2 (one sequence over both) and on 2 GPUs with --seq-parallel 1 (data parallel);
#        the per-step losses and the validation losses must agree (relative difference below 2e-3), and a
#        checkpoint written by the 2-GPU run resumes on 1 GPU.
# speed: the base model at 32K tokens, batch 1, a few steps on 1 GPU and with --seq-parallel 2 on 2 GPUs
#        (16K tokens a GPU); prints tokens/s (the mean of the steps after the first).
# Logs and metrics go to $OUT.
source scripts/device-setup.sh
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
L="node --import tsx src/cli/main.ts"
status=0

source scripts/device-corpus.sh
tokens=/tmp/longnet-tokens

# one GPU, and two GPUs (one process each under the launcher; rank 0 logs and writes)
ONE="$L train --device cuda"
TWO="$L launch --nproc-per-node 2 --master-port 0 -- node --import tsx src/cli/main.ts train --device cuda"

# compare A B: per-step loss and validation loss of two metrics.jsonl, max relative difference; fails above 2e-3
compare() {
  node -e '
    const fs = require("fs");
    const read = (f) => fs.readFileSync(f, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const [a, b] = [read(process.argv[1]), read(process.argv[2])];
    let worst = 0, n = 0;
    if (a.length !== b.length) { console.log(`different step counts: ${a.length} vs ${b.length}`); process.exit(1); }
    a.forEach((x, i) => {
      for (const k of ["loss", "valLoss"]) {
        if (x[k] === undefined) continue;
        const y = b[i][k];
        worst = Math.max(worst, Math.abs(x[k] - y) / Math.abs(y));
        n++;
      }
    });
    console.log(`${n} losses compared, max relative difference ${worst.toExponential(2)}: ${worst < 2e-3 ? "agree" : "DISAGREE"}`);
    process.exit(worst < 2e-3 ? 0 : 1);
  ' "$1" "$2"
}

# tokens/s of a run: the mean of tokensPerSecond over the steps after the first
speed() {
  node -e '
    const fs = require("fs");
    const m = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.tokensPerSecond !== undefined);
    const rest = m.slice(1);
    const mean = rest.reduce((a, r) => a + r.tokensPerSecond, 0) / Math.max(1, rest.length);
    console.log(`${process.argv[2]}: ${Math.round(mean)} tokens/s (${rest.length} steps after the first; first step ${Math.round(m[0]?.tokensPerSecond ?? 0)} tokens/s)`);
  ' "$1" "$2"
}

modes=("$@")
[ ${#modes[@]} = 0 ] && modes=(check speed)
for mode in "${modes[@]}"; do
  case $mode in
  check)
    w=/tmp/parallel-check; rm -rf $w; mkdir -p $w
    F=(--preset tiny --data $corpus --token-cache $tokens --steps 8 --warmup 2 --seq-len 4096 --batch 2 --eval-every 4 --eval-sequences 4 --val-fraction 0.05)
    export LONGNET_MATMUL_PRECISION=fp32
    {
      echo "== 1 GPU, global batch 2 x 4096"
      timeout 300 $ONE --out $w/one "${F[@]}" || status=1
      echo "== 2 GPUs, --seq-parallel 2 (each sequence split over both)"
      timeout 300 $TWO --out $w/sp2 "${F[@]}" --seq-parallel 2 || status=1
      echo "== 2 GPUs, --seq-parallel 1 (data parallel)"
      timeout 300 $TWO --out $w/dp2 "${F[@]}" || status=1
      echo "== losses: sequence parallel against 1 GPU"; compare $w/sp2/metrics.jsonl $w/one/metrics.jsonl || status=1
      echo "== losses: data parallel against 1 GPU"; compare $w/dp2/metrics.jsonl $w/one/metrics.jsonl || status=1
      echo "== the 2-GPU run stopped at step 4 and resumed on 1 GPU"
      timeout 300 $TWO --out $w/split "${F[@]}" --seq-parallel 2 --stop-at 4 || status=1
      timeout 300 $ONE --out $w/split --resume || status=1
      compare $w/split/metrics.jsonl $w/one/metrics.jsonl || status=1
    } > >(tee "$OUT/parallel-check.log" | grep -vE '^step [0-9]+/') 2>&1
    unset LONGNET_MATMUL_PRECISION
    for r in one sp2 dp2 split; do cp $w/$r/metrics.jsonl "$OUT/parallel-check-$r.jsonl" 2>/dev/null; done
    ;;
  speed)
    w=/tmp/parallel-speed; rm -rf $w; mkdir -p $w
    F=(--preset base --data $corpus --token-cache $tokens --tokenizer byte --steps 6 --warmup 1 --seq-len 32768 --batch 1 --eval-every 6 --eval-sequences 1 --val-fraction 0.05)
    {
      echo "== base, 32K tokens, 1 GPU"
      timeout 500 $ONE --out $w/one "${F[@]}" || status=1
      echo "== base, 32K tokens, 2 GPUs, --seq-parallel 2"
      timeout 500 $TWO --out $w/sp2 "${F[@]}" --seq-parallel 2 || status=1
      speed $w/one/metrics.jsonl "1 GPU, 32K tokens"
      speed $w/sp2/metrics.jsonl "2 GPUs (--seq-parallel 2), 32K tokens"
      compare $w/sp2/metrics.jsonl $w/one/metrics.jsonl
    } > >(tee "$OUT/parallel-speed.log" | grep -vE '^step [0-9]+/') 2>&1
    for r in one sp2; do cp $w/$r/metrics.jsonl "$OUT/parallel-speed-$r.jsonl" 2>/dev/null; done
    ;;
  *) echo "unknown mode $mode"; status=1 ;;
  esac
done
wait
exit $status
