#include "rotary.h"

#include <cuda_bf16.h>

#include "launch_util.cuh"

namespace ln {

namespace {

__device__ __forceinline__ float2 pair_load(float2 v) { return v; }
__device__ __forceinline__ float2 pair_load(__nv_bfloat162 v) { return __bfloat1622float2(v); }
__device__ __forceinline__ void pair_store(float2& d, float2 v) { d = v; }
__device__ __forceinline__ void pair_store(__nv_bfloat162& d, float2 v) { d = __float22bfloat162_rn(v); }

// One thread a pair: both elements of a pair share the position and read each other, so a pair is one
// load of x (8 bytes in float32, 4 in bfloat16), of cos and of sin (float32 tables), and one store.
template <bool TRANSPOSE, typename Pair>
__global__ void rotate_pairs_kernel(const Pair* __restrict__ x, const float2* __restrict__ cos, const float2* __restrict__ sin,
                                    Pair* __restrict__ y, int64_t pairs, int64_t positions, int64_t inner, int64_t half_dim) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / half_dim;  // (outer, position, inner) row of x
    const int64_t position = (row / inner) % positions;
    const int64_t t = position * half_dim + (i - row * half_dim);
    const float2 v = pair_load(x[i]), c = cos[t], s = sin[t];
    float2 out;
    if (TRANSPOSE) {
      out.x = v.x * c.x + v.y * s.y;
      out.y = v.y * c.y + v.x * s.x;
    } else {
      out.x = v.x * c.x + v.y * s.x;
      out.y = v.y * c.y + v.x * s.y;
    }
    pair_store(y[i], out);
  }
}

template <typename Pair>
void rotate_pairs_typed(const void* x, const float* cos, const float* sin, void* y, int64_t pairs, int64_t positions, int64_t inner,
                        int64_t half_dim, bool transpose, cudaStream_t s) {
  const auto* x2 = static_cast<const Pair*>(x);
  const auto* c2 = reinterpret_cast<const float2*>(cos);
  const auto* s2 = reinterpret_cast<const float2*>(sin);
  auto* y2 = static_cast<Pair*>(y);
  if (transpose) {
    rotate_pairs_kernel<true, Pair><<<grid_for(pairs), kThreads, 0, s>>>(x2, c2, s2, y2, pairs, positions, inner, half_dim);
  } else {
    rotate_pairs_kernel<false, Pair><<<grid_for(pairs), kThreads, 0, s>>>(x2, c2, s2, y2, pairs, positions, inner, half_dim);
  }
}

}  // namespace

void launch_rotate_pairs(bool bf16, const void* x, const float* cos, const float* sin, void* y, int64_t outer, int64_t positions,
                         int64_t inner, int64_t dim, bool transpose, cudaStream_t s) {
  const int64_t pairs = outer * positions * inner * dim / 2;
  if (pairs == 0) return;
  if (bf16) rotate_pairs_typed<__nv_bfloat162>(x, cos, sin, y, pairs, positions, inner, dim / 2, transpose, s);
  else rotate_pairs_typed<float2>(x, cos, sin, y, pairs, positions, inner, dim / 2, transpose, s);
  check_launch("rotatePairs kernel");
}

}  // namespace ln
