#include "rotary.h"

#include "launch_util.cuh"

namespace ln {

namespace {

// One thread a pair: both elements of a pair share the position and read each other, so a pair is one
// 8-byte load of x, cos and sin, and one store.
template <bool TRANSPOSE>
__global__ void rotate_pairs_kernel(const float2* __restrict__ x, const float2* __restrict__ cos, const float2* __restrict__ sin,
                                    float2* __restrict__ y, int64_t pairs, int64_t positions, int64_t inner, int64_t half_dim) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / half_dim;  // (outer, position, inner) row of x
    const int64_t position = (row / inner) % positions;
    const int64_t t = position * half_dim + (i - row * half_dim);
    const float2 v = x[i], c = cos[t], s = sin[t];
    float2 out;
    if (TRANSPOSE) {
      out.x = v.x * c.x + v.y * s.y;
      out.y = v.y * c.y + v.x * s.x;
    } else {
      out.x = v.x * c.x + v.y * s.x;
      out.y = v.y * c.y + v.x * s.y;
    }
    y[i] = out;
  }
}

}  // namespace

void launch_rotate_pairs(const float* x, const float* cos, const float* sin, float* y, int64_t outer, int64_t positions, int64_t inner,
                         int64_t dim, bool transpose, cudaStream_t s) {
  const int64_t pairs = outer * positions * inner * dim / 2;
  if (pairs == 0) return;
  const auto* x2 = reinterpret_cast<const float2*>(x);
  const auto* c2 = reinterpret_cast<const float2*>(cos);
  const auto* s2 = reinterpret_cast<const float2*>(sin);
  auto* y2 = reinterpret_cast<float2*>(y);
  if (transpose) {
    rotate_pairs_kernel<true><<<grid_for(pairs), kThreads, 0, s>>>(x2, c2, s2, y2, pairs, positions, inner, dim / 2);
  } else {
    rotate_pairs_kernel<false><<<grid_for(pairs), kThreads, 0, s>>>(x2, c2, s2, y2, pairs, positions, inner, dim / 2);
  }
  check_launch("rotatePairs kernel");
}

}  // namespace ln
