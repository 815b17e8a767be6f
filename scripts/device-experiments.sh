#!/usr/bin/env bash
# On the GPU machine: the small-scale reproductions of experiments/README.md ("On a GPU: the 32K runs").
# Run `bash scripts/device-pack.sh --experiments` here first (it adds the corpus), carry .device,
# native/build/longnet_cuda.node and, to resume an earlier call's training, experiments/runs. Then, there:
#   source scripts/device-setup.sh; [SEED=1] bash scripts/device-experiments.sh [table2] [suffix] [passkey]
# SEED (default 0) seeds initialization and data order; results are tagged gpu (seed 0) or gpu-seed<SEED>.
# PASSKEY_STEPS (default 2000) trains the passkey models longer; their results are tagged <tag>-<steps>steps.
# Training resumes from the checkpoints in experiments/runs/<tag>, so a stage cut by its time limit goes on
# in the next call. Results, logs and checkpoints (without optimizer states) come back as one file,
# $OUT/experiments-<tag>.tgz.
set -o pipefail
OUT=${OUT:-/tmp/out}
logs=/tmp/experiment-logs
rm -rf "$logs"
mkdir -p "$OUT" "$logs"
TABLE2_LIMIT=${TABLE2_LIMIT:-360}
PASSKEY_LIMIT=${PASSKEY_LIMIT:-240}
SEED=${SEED:-0}
tag=gpu
[ "$SEED" = 0 ] || tag=gpu-seed$SEED
PASSKEY_STEPS=${PASSKEY_STEPS:-2000}
passkey_tag=$tag
[ "$PASSKEY_STEPS" = 2000 ] || passkey_tag=$tag-${PASSKEY_STEPS}steps
TABLE2_MODELS="transformer-2k longnet-2k longnet-8k longnet-32k sparse-32k"
TABLE2_ARGS="--steps 400 --tokens-per-step 32768 --seed $SEED"

# stage LIMIT NAME COMMAND...: one experiment under its time limit, its output in $logs/NAME.log
stage() {
  local limit=$1 name=$2
  shift 2
  echo "== $name (limit $limit s): $*" | tee "$logs/$name.log"
  local started=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | grep --line-buffered -v '^\s*$' | tee -a "$logs/$name.log" | grep --line-buffered -E '@|steps of|retriev|length|wrote|Error|error' | tail -40
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$logs/$name.log"
  [ "$rc" = 0 ] || touch "$logs/failed"  # stages may run in the background: a file, not a variable
}

modes=("$@")
[ ${#modes[@]} = 0 ] && modes=(table2 suffix passkey)
for mode in "${modes[@]}"; do
  case $mode in
  table2)
    # the tiny model leaves the GPU mostly idle: the five models train side by side, then one evaluation
    for m in $TABLE2_MODELS; do
      stage "$TABLE2_LIMIT" "table2-$tag-train-$m" node --import tsx experiments/table2.ts --stage train --device cuda --out-tag "$tag" \
        $TABLE2_ARGS --models "$m" &
    done
    wait
    stage 240 table2-$tag-eval node --import tsx experiments/table2.ts --stage eval --device cuda --out-tag "$tag" \
      $TABLE2_ARGS --models "${TABLE2_MODELS// /,}" --eval-tokens 131072 ;;
  suffix)
    stage 180 suffix-loss-$tag node --import tsx experiments/suffix-loss.ts --device cuda --out-tag "$tag" --windows 4 \
      --models transformer-2k,longnet-8k,longnet-32k,sparse-32k ;;
  passkey)
    # the two models side by side; their rows merge into one file
    for m in longnet transformer; do
      stage "$PASSKEY_LIMIT" "passkey-$passkey_tag-$m" node --import tsx experiments/passkey.ts --device cuda --out-tag "$passkey_tag" \
        --models "$m" --seed "$SEED" --train-length 2048 --steps "$PASSKEY_STEPS" --batch 8 --lengths 2048,4096,8192,16384,32768 --samples 20 &
      sleep 20  # started apart, so that they do not rewrite the results file at the same moment
    done
    wait ;;
  *) echo "unknown stage $mode (table2, suffix, passkey)"; touch "$logs/failed" ;;
  esac
done
# the device returns few files: one archive of the results, the logs and the light part of each checkpoint
tar -czf "$OUT/experiments-$tag.tgz" experiments/results "$logs" \
  $(ls -d experiments/runs/"$tag"/*/{config.json,trainer-state.json,metrics.jsonl,model.safetensors} 2>/dev/null)
if [ -e "$logs/failed" ]; then echo "device-experiments: FAIL"; exit 1; fi
echo "device-experiments: PASS"
