#!/usr/bin/env bash
# On the GPU machine, after `source scripts/device-setup.sh` (with scripts/device-pack.sh run here first):
#   bash scripts/device-train.sh [check] [base32k] [bench]
# check:   every CUDA test, then the CLI end to end: tiny trained on cuda, evaluated on cuda and cpu,
#          generation on cuda (greedy, against the cpu); tiny trained on cpu, evaluated on both.
# base32k: the base preset at a 32K context with the paper's schedule, a few steps on a code corpus.
# bench:   bench/gpu-train.ts (tokens/s, MFU, profile) at 8K and 32K; its RESULTS.md section in $OUT
#          (BENCH_PRECISIONS=tf32,bf16 measures both product precisions; BENCH_STEPS timed steps, 30 by default:
#          at its power limit the card's clock moves from step to step).
# profile: bench/gpu-matmul.ts, and the slowest backend calls of a 32K step.
# Logs and small results go to $OUT.
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
L="node --import tsx src/cli/main.ts"
status=0

source scripts/device-corpus.sh
tokens=/tmp/longnet-tokens

for mode in "$@"; do
  case $mode in
  check)
    timeout 240 node --import tsx --test --test-reporter=spec test/cuda-*.test.ts 2>&1 | tee "$OUT/test.log" | grep -E '^(✔|✖|ℹ)|not ok|Error|failed' | tail -80
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    w=/tmp/e2e; rm -rf $w; mkdir -p $w
    {
      echo "== tiny: train on cuda"
      $L train --device cuda --out $w/cuda --steps 40 --seq-len 512 --batch 2 --eval-every 20 --eval-sequences 8 || status=1
      for d in cuda cpu; do echo "== eval of the cuda checkpoint on $d"; $L eval --checkpoint $w/cuda --device $d --max-sequences 16 || status=1; done
      echo "== generate on cuda (greedy, fp32 products) and on cpu"
      LONGNET_MATMUL_PRECISION=fp32 $L generate --checkpoint $w/cuda --device cuda --prompt 'function debounce(' --max-new-tokens 80 --temperature 0 > $w/gen-cuda.txt || status=1
      $L generate --checkpoint $w/cuda --device cpu --prompt 'function debounce(' --max-new-tokens 80 --temperature 0 > $w/gen-cpu.txt || status=1
      $L generate --checkpoint $w/cuda --device cuda --prompt 'function debounce(' --max-new-tokens 200 --seed 1 || status=1
      if cmp -s $w/gen-cuda.txt $w/gen-cpu.txt; then echo "greedy text: cuda = cpu"; else echo "greedy text differs:"; cat $w/gen-cuda.txt $w/gen-cpu.txt; fi
      echo "== tiny: train on cpu, evaluate on both"
      $L train --device cpu --out $w/cpu --steps 10 --seq-len 512 --batch 2 --eval-every 10 --eval-sequences 8 || status=1
      for d in cpu cuda; do echo "== eval of the cpu checkpoint on $d"; $L eval --checkpoint $w/cpu --device $d --max-sequences 16 || status=1; done
      echo "== resume on cuda a run started on cpu"
      $L train --device cuda --out $w/cpu --steps 14 --resume || status=1
    } 2>&1 | tee "$OUT/e2e.log" | grep -vE '^step [0-9]+/' 
    cp $w/cuda/metrics.jsonl "$OUT/e2e-metrics.jsonl" 2>/dev/null
    ;;
  base32k)
    rm -rf /tmp/base32k
    $L train --preset base --seq-len 32768 --batch 1 --steps 8 --warmup 2 --eval-every 4 --eval-sequences 1 --val-fraction 0.05 \
      --device cuda --data $corpus --tokenizer byte --token-cache $tokens --out /tmp/base32k 2>&1 | tee "$OUT/base32k.log" | grep -vE '^step [0-9]+/[0-9]+ ' || status=1
    cp /tmp/base32k/metrics.jsonl "$OUT/base32k-metrics.jsonl" 2>/dev/null
    cat /tmp/base32k/metrics.jsonl
    ;;
  bench)
    node --import tsx bench/gpu-train.ts --data $corpus --token-cache $tokens --lengths 8192,32768 --tokenizers byte,cl100k_base \
      --precisions "${BENCH_PRECISIONS:-tf32}" --steps "${BENCH_STEPS:-30}" --section "$OUT/results-section.md" 2>&1 | tee "$OUT/bench-train.log" || status=1
    ;;
  profile)
    # matmul modes on their own, then where a 32K step of each vocabulary spends its time, call by call
    node --import tsx bench/gpu-matmul.ts 8192 2>&1 | tee "$OUT/bench-matmul.log" || status=1
    node --import tsx bench/gpu-train.ts --data $corpus --token-cache $tokens --lengths 32768 --tokenizers byte,cl100k_base \
      --precisions tf32,bf16 --steps 2 2>&1 | tee "$OUT/profile-train.log" | grep -vE '^\|' || status=1
    ;;
  *) echo "unknown mode $mode"; status=1 ;;
  esac
done
exit $status
