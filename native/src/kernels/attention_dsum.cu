#include "attention_dsum.h"

#include <cuda_bf16.h>

#include <cstdint>

#include "element_types.cuh"
#include "launch_util.cuh"

namespace ln {

namespace {

// Eight consecutive elements as float32, from one 16-byte load (bf16) or two (float32).
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&x)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 f = __bfloat1622float2(h[i]);
    x[2 * i] = f.x;
    x[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const float* p, float (&x)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
}

// LANES threads per row (dim = 8 LANES), each one vector of eight elements of o and of dO, reduced by
// shuffles within the row's lanes: whole 16-byte loads, and every lane busy at dim = 32, 64 or 128.
template <typename TO, typename TD, int LANES>
__global__ void dsum_vector_kernel(const TO* __restrict__ o, const TD* __restrict__ d_o, float* __restrict__ dsum, int64_t rows) {
  constexpr int dim = 8 * LANES, kRowsPerWarp = 32 / LANES;
  const int part = threadIdx.x % LANES, lane = threadIdx.x % 32;
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  // The loop is uniform across the warp (its shuffles need every lane), rows past the end read nothing.
  for (int64_t first = warp * kRowsPerWarp; first < rows; first += warps * kRowsPerWarp) {
    const int64_t row = first + lane / LANES;
    float acc = 0.0f;
    if (row < rows) {
      float a[8], b[8];
      load8(o + row * dim + part * 8, a);
      load8(d_o + row * dim + part * 8, b);
#pragma unroll
      for (int i = 0; i < 8; i++) acc = fmaf(a[i], b[i], acc);
    }
#pragma unroll
    for (int m = LANES / 2; m > 0; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m, LANES);
    if (row < rows && part == 0) dsum[row] = acc;
  }
}

// Any dim: one warp per row (grid-stride over rows); lanes stride over the row's elements, so consecutive
// lanes read consecutive addresses. Products are accumulated in float32 by fma, then reduced across the warp.
template <typename TO, typename TD>
__global__ void dsum_kernel(const TO* __restrict__ o, const TD* __restrict__ d_o, float* __restrict__ dsum, int64_t rows, int dim) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
    const TO* a = o + row * dim;
    const TD* b = d_o + row * dim;
    float acc = 0.0f;
    for (int d = lane; d < dim; d += 32) acc = fmaf(ldf(a[d]), ldf(b[d]), acc);
    acc = warp_reduce(acc, SumOp{});
    if (lane == 0) dsum[row] = acc;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename TO, typename TD>
void launch_typed(const void* o, const void* d_o, float* dsum, int64_t rows, int dim, cudaStream_t s) {
  const TO* to = static_cast<const TO*>(o);
  const TD* td = static_cast<const TD*>(d_o);
  auto vector = [&]<int LANES>() {
    dsum_vector_kernel<TO, TD, LANES><<<grid_for(rows * LANES), kThreads, 0, s>>>(to, td, dsum, rows);
    check_launch("attention Dsum kernel");
  };
  if (aligned16(o) && aligned16(d_o)) {
    if (dim == 32) return vector.template operator()<4>();
    if (dim == 64) return vector.template operator()<8>();
    if (dim == 128) return vector.template operator()<16>();
  }
  constexpr int kRowsPerBlock = kThreads / 32;
  dsum_kernel<TO, TD><<<grid_for(rows, kRowsPerBlock), kThreads, 0, s>>>(to, td, dsum, rows, dim);
  check_launch("attention Dsum kernel");
}

template <typename TO>
void launch_second(const void* o, const void* d_o, DType do_type, float* dsum, int64_t rows, int dim, cudaStream_t s) {
  switch (do_type) {
    case DType::F32: return launch_typed<TO, float>(o, d_o, dsum, rows, dim, s);
    case DType::BF16: return launch_typed<TO, __nv_bfloat16>(o, d_o, dsum, rows, dim, s);
    default: throw RangeError(std::string("attention Dsum: dO must be float32 or bfloat16, got ") + dtype_name(do_type));
  }
}

}  // namespace

void launch_attention_dsum(const void* o, DType o_type, const void* d_o, DType do_type, float* dsum, int64_t rows, int dim,
                           cudaStream_t s) {
  if (rows < 0 || dim < 1) throw RangeError("attention Dsum: invalid shape");
  if (rows == 0) return;
  switch (o_type) {
    case DType::F32: return launch_second<float>(o, d_o, do_type, dsum, rows, dim, s);
    case DType::BF16: return launch_second<__nv_bfloat16>(o, d_o, do_type, dsum, rows, dim, s);
    default: throw RangeError(std::string("attention Dsum: o must be float32 or bfloat16, got ") + dtype_name(o_type));
  }
}

}  // namespace ln
