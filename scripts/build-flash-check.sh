#!/usr/bin/env bash
# Builds native/build/check/flash_check (native/check/flash_check.cu): the fused attention kernels against
# the exact float32 ones, and their timings, with no Node in the way. Needs nvcc; runs where a GPU is.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/native/build/check"
name=${FLASH_CHECK_NAME:-flash_check}  # e.g. a second build with other FLASH_CHECK_NVCC_FLAGS, for FLASH_BINS
objdir="$out/obj-$name"
mkdir -p "$objdir"
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
# sm_90a: the wgmma forward (plain sm_90 code would leave its kernel empty and the mma.sync one would run)
archs=(-gencode arch=compute_90a,code=sm_90a)
extra=(${FLASH_CHECK_NVCC_FLAGS:-})  # e.g. "-Xptxas -v" for registers and spills
sources=(common.cc device.cc memory.cc strided.cc kernels/elementwise.cu kernels/attention_forward.cu
  kernels/attention_backward.cu kernels/attention_dsum.cu kernels/flash_attention_forward.cu kernels/flash_attention_backward.cu)
objects=()
pids=()
for s in "${sources[@]}"; do
  o="$objdir/$(echo "$s" | tr / _).o"
  objects+=("$o")
  rm -f "$o"  # a failed compile must not leave an older object to link
  "$nvcc" -std=c++20 -O3 "${archs[@]}" "${extra[@]}" -x cu -I"$root/native/src" -c "$root/native/src/$s" -o "$o" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { echo "build-flash-check: a compile failed" >&2; exit 1; }; done
"$nvcc" -std=c++20 -O3 "${archs[@]}" -I"$root/native/src" "${extra[@]}" "$root/native/check/flash_check.cu" "${objects[@]}" -o "$out/$name"
echo "built $out/$name"
