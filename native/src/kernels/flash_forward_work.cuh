// What the fused forward kernels share: the problem a block works on (a dilated pattern's segment, or a
// packed problem) and the stores of the output element types (element_types.cuh reads them).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "attention_common.cuh"
#include "element_types.cuh"
#include "flash_attention.h"

namespace ln::flash {

// Query and key rows of the block's problem; causal: key j is visible to query i iff j <= i + shift.
struct Span {
  int64_t row0, stride, n;
};
struct ForwardWork {
  Span q, k;
  int64_t shift;
  int tile;
};

// Work of a dilated pattern: the selected rows of one (batch, head, segment) are both queries and keys.
struct PatternSource {
  PatternGeom g;
  __device__ __forceinline__ ForwardWork operator()(int64_t block) const {
    const Problem p = locate(g, block, true, true);
    const Span rows{p.row0, p.rstride, p.n_sel};
    return {rows, rows, 0, p.tile};
  }
};

// Work of packed problems: tiles[2 b], tiles[2 b + 1] = problem and query tile of block b.
struct TableSource {
  const FlashProblem* problems;
  const int32_t* tiles;
  __device__ __forceinline__ ForwardWork operator()(int64_t block) const {
    const FlashProblem pr = problems[tiles[2 * block]];
    return {{pr.q_row0, pr.q_stride, pr.n_q}, {pr.k_row0, pr.k_stride, pr.n_k}, pr.n_k - pr.n_q, tiles[2 * block + 1]};
  }
};

__device__ __forceinline__ void store_pair(float* at, float x, float y) { *reinterpret_cast<float2*>(at) = make_float2(x, y); }
__device__ __forceinline__ void store_pair(__nv_bfloat16* at, float x, float y) {
  *reinterpret_cast<__nv_bfloat162*>(at) = __floats2bfloat162_rn(x, y);
}

}  // namespace ln::flash
