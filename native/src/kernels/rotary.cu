#include "rotary.h"

#include <type_traits>

#include <cuda_bf16.h>

#include "launch_util.cuh"
#include "vector_access.cuh"

namespace ln {

namespace {

__device__ __forceinline__ float2 pair_load(float2 v) { return v; }
__device__ __forceinline__ float2 pair_load(__nv_bfloat162 v) { return __bfloat1622float2(v); }
__device__ __forceinline__ void pair_store(float2& d, float2 v) { d = v; }
__device__ __forceinline__ void pair_store(__nv_bfloat162& d, float2 v) { d = __float22bfloat162_rn(v); }

// Where a rotation reports a non-finite output: `failed` lowered to `id` (nothing when failed is null).
struct FiniteCheck {
  int* failed;
  int id;
  __device__ __forceinline__ void report(bool finite) const {
    if (failed && !finite) atomicMin(failed, id);
  }
};

// Whether v is finite once stored as T (a float32 beyond bfloat16's range rounds to infinity).
template <typename T>
__device__ __forceinline__ bool stored_finite(float v) {
  if constexpr (std::is_same_v<T, float>) return isfinite(v);
  else return isfinite(__bfloat162float(__float2bfloat16_rn(v)));
}

// One thread a pair: both elements of a pair share the position and read each other, so a pair is one
// load of x (8 bytes in float32, 4 in bfloat16), of cos and of sin (float32 tables), and one store (y's
// type may differ from x's: the attention backward rotates its float32 gradients into bfloat16).
template <bool TRANSPOSE, typename PairIn, typename PairOut>
__global__ void rotate_pairs_kernel(const PairIn* __restrict__ x, const float2* __restrict__ cos, const float2* __restrict__ sin,
                                    PairOut* __restrict__ y, int64_t pairs, int64_t positions, int64_t inner, int64_t half_dim,
                                    FiniteCheck check) {
  bool finite = true;
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
    using TOut = std::conditional_t<std::is_same_v<PairOut, float2>, float, __nv_bfloat16>;
    if (check.failed) finite = finite && stored_finite<TOut>(out.x) && stored_finite<TOut>(out.y);
  }
  check.report(finite);
}

// Four pairs a thread: 8 elements of x (one 16-byte load in bfloat16, two in float32) and of each table,
// with the row arithmetic in Index (32-bit where the tensor allows: 64-bit division is slow). Needs
// dim % 8 == 0 and 16-byte aligned operands.
template <bool TRANSPOSE, typename TIn, typename TOut, typename Index>
__global__ void rotate_vec_kernel(const TIn* __restrict__ x, const float* __restrict__ cos, const float* __restrict__ sin,
                                  TOut* __restrict__ y, Index n, Index positions, Index inner, Index dim, FiniteCheck check) {
  bool finite = true;
  for (Index e = (blockIdx.x * Index(blockDim.x) + threadIdx.x) * 8; e < n; e += Index(gridDim.x) * blockDim.x * 8) {
    const Index row = e / dim;  // (outer, position, inner) row of x
    const Index t = ((row / inner) % positions) * dim + (e - row * dim);
    float v[8], c[8], sn[8], out[8];
    load8(x + e, v);
    load8(cos + t, c);
    load8(sin + t, sn);
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      if (TRANSPOSE) {
        out[i] = v[i] * c[i] + v[i + 1] * sn[i + 1];
        out[i + 1] = v[i + 1] * c[i + 1] + v[i] * sn[i];
      } else {
        out[i] = v[i] * c[i] + v[i + 1] * sn[i];
        out[i + 1] = v[i + 1] * c[i + 1] + v[i] * sn[i + 1];
      }
    }
    store8(y + e, out);
    if (check.failed) {
#pragma unroll
      for (int i = 0; i < 8; i++) finite = finite && stored_finite<TOut>(out[i]);
    }
  }
  check.report(finite);
}

template <typename TIn, typename TOut>
bool rotate_vec(const void* x, const float* cos, const float* sin, void* y, int64_t n, int64_t positions, int64_t inner,
                int64_t dim, bool transpose, FiniteCheck check, cudaStream_t s) {
  if (dim % 8 != 0 || !vector_aligned({x, cos, sin, y})) return false;
  const auto go = [&]<typename Index>(Index) {
    const auto* xt = static_cast<const TIn*>(x);
    auto* yt = static_cast<TOut*>(y);
    const unsigned blocks = grid_for(ceil_div(n, 8));
    if (transpose) {
      rotate_vec_kernel<true, TIn, TOut, Index><<<blocks, kThreads, 0, s>>>(xt, cos, sin, yt, Index(n), Index(positions), Index(inner),
                                                                          Index(dim), check);
    } else {
      rotate_vec_kernel<false, TIn, TOut, Index><<<blocks, kThreads, 0, s>>>(xt, cos, sin, yt, Index(n), Index(positions), Index(inner),
                                                                           Index(dim), check);
    }
  };
  // the loop index reaches n + one grid's worth of elements
  if (n + int64_t(grid_for(ceil_div(n, 8))) * kThreads * 8 < (int64_t(1) << 31)) go(int32_t(0));
  else go(int64_t(0));
  return true;
}

template <typename PairIn, typename PairOut>
void rotate_pairs_typed(const void* x, const float* cos, const float* sin, void* y, int64_t pairs, int64_t positions, int64_t inner,
                        int64_t half_dim, bool transpose, FiniteCheck check, cudaStream_t s) {
  const auto* x2 = static_cast<const PairIn*>(x);
  const auto* c2 = reinterpret_cast<const float2*>(cos);
  const auto* s2 = reinterpret_cast<const float2*>(sin);
  auto* y2 = static_cast<PairOut*>(y);
  if (transpose) {
    rotate_pairs_kernel<true, PairIn, PairOut><<<grid_for(pairs), kThreads, 0, s>>>(x2, c2, s2, y2, pairs, positions, inner, half_dim, check);
  } else {
    rotate_pairs_kernel<false, PairIn, PairOut><<<grid_for(pairs), kThreads, 0, s>>>(x2, c2, s2, y2, pairs, positions, inner, half_dim, check);
  }
}

// Calls f with a null pointer of the element type (float or __nv_bfloat16) of a bf16 flag.
template <typename F>
void with_element(bool bf16, F&& f) {
  if (bf16) f(static_cast<__nv_bfloat16*>(nullptr));
  else f(static_cast<float*>(nullptr));
}

template <typename T>
using PairOf = std::conditional_t<std::is_same_v<T, float>, float2, __nv_bfloat162>;

}  // namespace

void launch_rotate_pairs(bool x_bf16, bool y_bf16, const void* x, const float* cos, const float* sin, void* y, int64_t outer,
                         int64_t positions, int64_t inner, int64_t dim, bool transpose, int* failed, int check_id, cudaStream_t s) {
  const FiniteCheck check{failed, check_id};
  const int64_t pairs = outer * positions * inner * dim / 2;
  if (pairs == 0) return;
  const int64_t n = pairs * 2;
  with_element(x_bf16, [&](auto* in_tag) {
    with_element(y_bf16, [&](auto* out_tag) {
      using TIn = std::remove_pointer_t<decltype(in_tag)>;
      using TOut = std::remove_pointer_t<decltype(out_tag)>;
      if (!rotate_vec<TIn, TOut>(x, cos, sin, y, n, positions, inner, dim, transpose, check, s)) {
        rotate_pairs_typed<PairOf<TIn>, PairOf<TOut>>(x, cos, sin, y, pairs, positions, inner, dim / 2, transpose, check, s);
      }
    });
  });
  check_launch("rotatePairs kernel");
}

}  // namespace ln
