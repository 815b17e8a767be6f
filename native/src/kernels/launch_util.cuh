// Helpers shared by the kernel files: grid sizes, warp and block reductions, index arithmetic.
#pragma once

#include <cstdint>

#include "../common.h"
#include "../strided.h"

namespace ln {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill the device a few times over.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t blocks = ceil_div(n, threads);
  const int64_t cap = 65536;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

// Max that propagates NaN, as the CPU backend's reductions do.
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return (a > b || isnan(a)) ? a : b; }
};

// Reduction over aligned runs of WIDTH consecutive lanes (a power of two up to 32); every lane of the warp
// must call it.
template <int WIDTH = 32, typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = WIDTH / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduction over a group of GROUP consecutive threads: part of a warp (GROUP a power of two below 32), one
// warp (GROUP == 32) or several (GROUP a multiple of 32 dividing blockDim.x: the whole block, or one of
// its equal parts). Every thread of the warp must call it, and of the block when GROUP > 32.
template <int GROUP, typename T, typename Op>
__device__ __forceinline__ T group_reduce(T v, Op op) {
  v = warp_reduce<(GROUP < 32 ? GROUP : 32)>(v, op);
  if constexpr (GROUP > 32) {
    __shared__ T buf[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int first = warp / (GROUP / 32) * (GROUP / 32);  // the group's first warp
    __syncthreads();  // an earlier call may still be reading buf
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    v = buf[first];
    for (int i = 1; i < GROUP / 32; i++) v = op(v, buf[first + i]);
  }
  return v;
}

template <int GROUP, typename T>
__device__ __forceinline__ T group_sum(T v) { return group_reduce<GROUP>(v, SumOp{}); }

template <int GROUP>
__device__ __forceinline__ float group_max(float v) { return group_reduce<GROUP>(v, MaxOp{}); }

// Two sums over a group at once, on group_reduce's terms: one exchange through shared memory (two
// barriers) where two calls of group_sum would take two.
template <int GROUP>
__device__ __forceinline__ float2 group_sum2(float a, float b) {
#pragma unroll
  for (int o = (GROUP < 32 ? GROUP : 32) / 2; o > 0; o >>= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  if constexpr (GROUP > 32) {
    __shared__ float2 buf[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int first = warp / (GROUP / 32) * (GROUP / 32);  // the group's first warp
    __syncthreads();  // an earlier call may still be reading buf
    if (lane == 0) buf[warp] = make_float2(a, b);
    __syncthreads();
    a = buf[first].x;
    b = buf[first].y;
    for (int i = 1; i < GROUP / 32; i++) {
      a += buf[first + i].x;
      b += buf[first + i].y;
    }
  }
  return make_float2(a, b);
}

// The offsets in operands 0 and 1 of the element with row-major index `i` of the layout's shape, from one
// decomposition of i. RANK > 0 is the layout's rank known at compile time (the loop unrolls and the
// outermost coordinate needs no division); RANK = 0 reads it from the layout.
template <int RANK, typename Index>
__device__ __forceinline__ void strided_offsets(const StridedLayout& l, Index i, Index& off0, Index& off1) {
  const int rank = RANK > 0 ? RANK : l.rank;
  off0 = 0;
  off1 = 0;
#pragma unroll
  for (int d = (RANK > 0 ? RANK : kMaxDims) - 1; d > 0; d--) {
    if (RANK == 0 && d >= rank) continue;
    const Index n = static_cast<Index>(l.shape[d]);
    const Index q = i / n;
    const Index c = i - q * n;
    off0 += c * static_cast<Index>(l.stride[0][d]);
    off1 += c * static_cast<Index>(l.stride[1][d]);
    i = q;
  }
  off0 += i * static_cast<Index>(l.stride[0][0]);
  off1 += i * static_cast<Index>(l.stride[1][0]);
}

// The offset in operand `op` of the element with row-major index `i` (any rank).
template <typename Index>
__device__ __forceinline__ Index strided_offset(const StridedLayout& l, int op, Index i) {
  Index off = 0;
  for (int d = l.rank - 1; d > 0; d--) {
    const Index n = static_cast<Index>(l.shape[d]);
    const Index q = i / n;
    off += (i - q * n) * static_cast<Index>(l.stride[op][d]);
    i = q;
  }
  return off + i * static_cast<Index>(l.stride[op][0]);
}

// Calls f.template operator()<RANK>() with the layout's rank when it is small, else with 0.
// Calls f.template operator()<B>() with the run-time flag as a compile-time one.
template <typename F>
void dispatch_flag(bool flag, F&& f) {
  if (flag) return f.template operator()<true>();
  return f.template operator()<false>();
}

template <typename F>
void dispatch_rank(int rank, F&& f) {
  switch (rank) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    default: return f.template operator()<0>();
  }
}

// Whether every offset the layout can produce, and the element count, fit in 32-bit arithmetic.
inline bool fits_int32(const StridedLayout& l, int64_t n) {
  if (n >= (int64_t(1) << 31)) return false;
  for (int j = 0; j < l.operands; j++) {
    int64_t span = 0;
    for (int d = 0; d < l.rank; d++) span += (l.shape[d] - 1) * l.stride[j][d];
    if (span >= (int64_t(1) << 31)) return false;
  }
  return true;
}

}  // namespace ln
