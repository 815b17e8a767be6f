#include "gradient_store.h"

#include <algorithm>
#include <type_traits>

#include <cuda_bf16.h>

#include "../device.h"
#include "../memory.h"
#include "elementwise.h"
#include "launch_util.cuh"
#include "reduce.h"
#include "rotary.h"
#include "vector_access.cuh"

namespace ln {

namespace {

// A block owns kTileLanes 8-column pieces (a warp reads 32 contiguous pieces of a row) of a range of rows,
// kRowLanes rows at a time; each thread keeps its 8 columns' sums in registers, and the block writes one
// row of column partials, which the reduction kernel adds up in a fixed order.
constexpr int kTileLanes = 32, kRowLanes = kThreads / kTileLanes, kTileColumns = kTileLanes * 8;
static_assert(kTileColumns == kThreads, "a block's threads each finish one column of its tile");

template <typename T>
__device__ __forceinline__ float as_stored(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return __bfloat162float(__float2bfloat16_rn(v));
}

template <bool ROTATE, typename T>
__global__ void __launch_bounds__(kThreads)
    store_gradient_kernel(const float* __restrict__ x, const float* __restrict__ cos, const float* __restrict__ sin, T* __restrict__ y,
                          float* __restrict__ partial, int64_t rows, int64_t positions, int cols, int dim, int64_t chunk) {
  const int lane = threadIdx.x % kTileLanes, row_lane = threadIdx.x / kTileLanes;
  const int c0 = (blockIdx.x * kTileLanes + lane) * 8;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float acc[8] = {};
  if (c0 < cols) {
    const int d0 = c0 % dim;  // dim % 8 == 0: a piece lies within one head
#pragma unroll 4
    for (int64_t r = r0 + row_lane; r < r1; r += kRowLanes) {
      float v[8], out[8];
      load8(x + r * cols + c0, v);
      if constexpr (ROTATE) {
        const int64_t t = (r % positions) * dim + d0;
        float c[8], sn[8];
        load8(cos + t, c);
        load8(sin + t, sn);
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
          out[i] = v[i] * c[i] + v[i + 1] * sn[i + 1];
          out[i + 1] = v[i + 1] * c[i + 1] + v[i] * sn[i];
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = v[i];
      }
      store8(y + r * cols + c0, out);
#pragma unroll
      for (int i = 0; i < 8; i++) acc[i] += as_stored<T>(out[i]);
    }
  }
  __shared__ float part[kRowLanes][kTileColumns];
#pragma unroll
  for (int i = 0; i < 8; i++) part[row_lane][lane * 8 + i] = acc[i];
  __syncthreads();
  const int c = blockIdx.x * kTileColumns + threadIdx.x;
  if (c >= cols) return;
  float total = 0.0f;
#pragma unroll
  for (int k = 0; k < kRowLanes; k++) total += part[k][threadIdx.x];
  partial[blockIdx.y * int64_t(cols) + c] = total;
}

}  // namespace

void launch_store_gradient(const float* x, const float* cos, const float* sin, void* y, DType y_t, float* sums, int64_t outer,
                           int64_t positions, int64_t inner, int64_t dim, cudaStream_t s) {
  const int64_t rows = outer * positions, cols = inner * dim;
  if (cols == 0) return;
  if (rows == 0) {
    launch_fill(sums, DType::F32, 0.0, cols, s);
    return;
  }
  const bool rotate = cos != nullptr;
  if (dim % 8 != 0 || cols > (int64_t(1) << 30) || !vector_aligned({x, cos, sin, y})) {
    // any other shape: the pass, then the sums by the reduction kernel
    if (rotate) launch_rotate_pairs(false, y_t == DType::BF16, x, cos, sin, y, outer, positions, inner, dim, true, nullptr, 0, s);
    else launch_cast(x, DType::F32, y, y_t, rows * cols, s);
    launch_reduce_into(ReduceOp::Sum, y_t, y, DType::F32, sums, {rows, cols}, {0}, s);
    return;
  }
  const int64_t tiles = ceil_div(cols / 8, kTileLanes);
  // about 4 blocks an SM, each at least 64 rows (8 a thread): at [32768, 12 x 64] fewer, longer blocks than 8
  // an SM stream faster (bench/RESULTS.md, 2026-11-29)
  const int64_t want = std::max<int64_t>(1, int64_t(device_info().sm_count) * 4 / tiles);
  const int64_t parts = std::min<int64_t>({want, ceil_div(rows, 64), 65535});
  const int64_t chunk = ceil_div(rows, parts), used = ceil_div(rows, chunk);
  const Scratch scratch(size_t(used * cols) * sizeof(float));
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(used));
  const auto go = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yt = static_cast<T*>(y);
    if (rotate) {
      store_gradient_kernel<true, T><<<grid, kThreads, 0, s>>>(x, cos, sin, yt, scratch.as<float>(), rows, positions, int(cols), int(dim), chunk);
    } else {
      store_gradient_kernel<false, T><<<grid, kThreads, 0, s>>>(x, cos, sin, yt, scratch.as<float>(), rows, positions, int(cols), int(dim), chunk);
    }
  };
  if (y_t == DType::BF16) go(static_cast<__nv_bfloat16*>(nullptr));
  else go(static_cast<float*>(nullptr));
  check_launch("storeGradient kernel");
  launch_reduce_into(ReduceOp::Sum, DType::F32, scratch.as<float>(), DType::F32, sums, {used, cols}, {0}, s);
}

}  // namespace ln
