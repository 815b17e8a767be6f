#include "attention_dsum.h"

#include <cuda_bf16.h>

#include <type_traits>

#include "launch_util.cuh"

namespace ln {

namespace {

template <typename T>
__device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) return __bfloat162float(x);
  else return x;
}

// One warp per row (grid-stride over rows); lanes stride over the row's elements, so consecutive lanes
// read consecutive addresses. Products are accumulated in float32 by fma, then reduced across the warp.
template <typename TO, typename TD>
__global__ void dsum_kernel(const TO* __restrict__ o, const TD* __restrict__ d_o, float* __restrict__ dsum, int64_t rows, int dim) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
    const TO* a = o + row * dim;
    const TD* b = d_o + row * dim;
    float acc = 0.0f;
    for (int d = lane; d < dim; d += 32) acc = fmaf(to_float(a[d]), to_float(b[d]), acc);
    acc = warp_reduce(acc, SumOp{});
    if (lane == 0) dsum[row] = acc;
  }
}

template <typename TO, typename TD>
void launch_typed(const void* o, const void* d_o, float* dsum, int64_t rows, int dim, cudaStream_t s) {
  constexpr int kRowsPerBlock = kThreads / 32;
  dsum_kernel<TO, TD><<<grid_for(rows, kRowsPerBlock), kThreads, 0, s>>>(static_cast<const TO*>(o), static_cast<const TD*>(d_o), dsum,
                                                                         rows, dim);
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
