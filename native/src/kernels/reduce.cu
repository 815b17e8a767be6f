#include "reduce.h"

#include <algorithm>
#include <string>

#include "../device.h"
#include "../memory.h"
#include "element_types.cuh"
#include "elementwise.h"
#include "launch_util.cuh"
#include "vector_access.cuh"

namespace ln {

namespace {

template <bool SUM>
using Acc = std::conditional_t<SUM, double, float>;

template <bool SUM>
__device__ __forceinline__ Acc<SUM> reduce_init() {
  if constexpr (SUM) return 0.0;
  else return -INFINITY;
}

template <bool SUM>
__device__ __forceinline__ Acc<SUM> combine(Acc<SUM> a, Acc<SUM> b) {
  if constexpr (SUM) return a + b;
  else return MaxOp{}(a, b);
}

// Rows of a contiguous [rows, cols] matrix, one group of GROUP threads per row.
template <bool SUM, int GROUP, typename T>
__global__ void reduce_rows_kernel(const T* __restrict__ x, float* __restrict__ out, int64_t rows, int64_t cols) {
  constexpr int kRowsPerBlock = kThreads / GROUP;
  const int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / GROUP;
  const int lane = threadIdx.x % GROUP;
  Acc<SUM> acc = reduce_init<SUM>();
  if (row < rows) {
    const T* p = x + row * cols;
    for (int64_t j = lane; j < cols; j += GROUP) acc = combine<SUM>(acc, Acc<SUM>(ldf(p[j])));
  }
  if constexpr (SUM) acc = group_sum<GROUP>(acc);
  else acc = group_max<GROUP>(acc);
  if (row < rows && lane == 0) out[row] = static_cast<float>(acc);
}

// Few long rows (the full reduction of a large tensor, say): each row split into chunks of `chunk`
// elements, one block per chunk, writing partial[row * gridDim.x + chunk index]; the partials are
// reduced again. One block per row would leave all but a few multiprocessors idle.
template <bool SUM, typename T>
__global__ void reduce_rows_split_kernel(const T* __restrict__ x, float* __restrict__ partial, int64_t count, int64_t chunk) {
  const int64_t row = blockIdx.y;
  const int64_t begin = blockIdx.x * chunk;
  const int64_t end = min(count, begin + chunk);
  const T* p = x + row * count;
  Acc<SUM> acc = reduce_init<SUM>();
  for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) acc = combine<SUM>(acc, Acc<SUM>(ldf(p[j])));
  if constexpr (SUM) acc = group_sum<kThreads>(acc);
  else acc = group_max<kThreads>(acc);
  if (threadIdx.x == 0) partial[row * gridDim.x + blockIdx.x] = static_cast<float>(acc);
}

// Columns of a contiguous [rows, cols] matrix (the sum over the leading axis, as in a bias gradient): a
// block owns a tile of 256 columns, each thread 8 adjacent ones (a warp reads a contiguous 256-column run
// of a row) in every 8th row of the block's chunk; the 8 partial results of a column meet in shared memory.
// Chunk blockIdx.y of the rows writes row blockIdx.y of `out` ([gridDim.y, cols]). Needs cols % 8 == 0
// and a 16-byte aligned x.
constexpr int kColumnLanes = 32, kColumnRowLanes = kThreads / kColumnLanes, kColumnTile = kColumnLanes * 8;
constexpr int kColumnAhead = 4;

template <bool SUM, typename T>
__global__ void reduce_columns_kernel(const T* __restrict__ x, float* __restrict__ out, int64_t rows, int64_t cols,
                                      int64_t chunk) {
  const int lane = threadIdx.x % kColumnLanes, row_lane = threadIdx.x / kColumnLanes;
  const int64_t tile = blockIdx.x * int64_t(kColumnTile), c0 = tile + lane * 8;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  Acc<SUM> acc[8];
#pragma unroll
  for (int j = 0; j < 8; j++) acc[j] = reduce_init<SUM>();
  if (c0 < cols) {
    // kColumnAhead rows' loads in flight before any is added (in the same order as one at a time)
    int64_t r = r0 + row_lane;
    for (; r + (kColumnAhead - 1) * kColumnRowLanes < r1; r += kColumnAhead * kColumnRowLanes) {
      float f[kColumnAhead][8];
#pragma unroll
      for (int a = 0; a < kColumnAhead; a++) load8(x + (r + a * kColumnRowLanes) * cols + c0, f[a]);
#pragma unroll
      for (int a = 0; a < kColumnAhead; a++) {
#pragma unroll
        for (int j = 0; j < 8; j++) acc[j] = combine<SUM>(acc[j], Acc<SUM>(f[a][j]));
      }
    }
    for (; r < r1; r += kColumnRowLanes) {
      float f[8];
      load8(x + r * cols + c0, f);
#pragma unroll
      for (int j = 0; j < 8; j++) acc[j] = combine<SUM>(acc[j], Acc<SUM>(f[j]));
    }
  }
  __shared__ Acc<SUM> part[kColumnRowLanes][kColumnTile];
#pragma unroll
  for (int j = 0; j < 8; j++) part[row_lane][lane * 8 + j] = acc[j];
  __syncthreads();
  // thread t now owns column t of the tile
  const int64_t c = tile + threadIdx.x;
  if (c >= cols) return;
  Acc<SUM> total = part[0][threadIdx.x];
#pragma unroll
  for (int k = 1; k < kColumnRowLanes; k++) total = combine<SUM>(total, part[k][threadIdx.x]);
  out[blockIdx.y * cols + c] = static_cast<float>(total);
}

// Any layout: one thread per output element, the reduced range split over gridDim.y partial results.
template <bool SUM, typename T>
__global__ void reduce_general_kernel(const T* __restrict__ x, float* __restrict__ out, StridedLayout kept,
                                      StridedLayout red, int64_t outputs, int64_t count, int64_t chunk) {
  const int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (o >= outputs) return;
  const int64_t r0 = blockIdx.y * chunk;
  const int64_t r1 = min(count, r0 + chunk);
  const T* base = x + strided_offset<int64_t>(kept, 0, o);
  Acc<SUM> acc = reduce_init<SUM>();
  if (red.rank == 1) {
    const int64_t s = red.stride[0][0];
    for (int64_t r = r0; r < r1; r++) acc = combine<SUM>(acc, Acc<SUM>(ldf(base[r * s])));
  } else {
    for (int64_t r = r0; r < r1; r++) acc = combine<SUM>(acc, Acc<SUM>(ldf(base[strided_offset<int64_t>(red, 0, r)])));
  }
  out[blockIdx.y * outputs + o] = static_cast<float>(acc);
}

template <bool SUM, typename T>
void reduce_impl(const T* x, float* out, const Dims& shape, const Dims& axes, cudaStream_t s) {
  const Dims strides = contiguous_strides(shape);
  Dims kept_shape, kept_stride, red_shape, red_stride;
  for (size_t i = 0; i < shape.size(); i++) {
    const bool reduced = std::find(axes.begin(), axes.end(), int64_t(i)) != axes.end();
    (reduced ? red_shape : kept_shape).push_back(shape[i]);
    (reduced ? red_stride : kept_stride).push_back(strides[i]);
  }
  const int64_t outputs = product(kept_shape);
  const int64_t count = product(red_shape);
  if (outputs == 0) return;
  if (count == 0) {
    launch_fill(out, DType::F32, SUM ? 0.0 : -INFINITY, outputs, s);
    return;
  }
  const StridedLayout kept = collapse(kept_shape, {kept_stride}, "reduce");
  const StridedLayout red = collapse(red_shape, {red_stride}, "reduce");

  // the reduced elements of each output are one contiguous run: a row reduction
  const bool rows_layout = red.rank == 1 && red.stride[0][0] == 1 && (outputs == 1 || (kept.rank == 1 && kept.stride[0][0] == count));
  if (rows_layout && (count >= 64 || outputs < 4096)) {
    const int64_t target = int64_t(device_info().sm_count) * 8;  // blocks that keep every multiprocessor busy
    if (outputs < target && outputs <= 65535 && count >= 32768) {
      const int64_t wanted = std::min(ceil_div(target, outputs), ceil_div(count, 8192));
      const int64_t chunk = ceil_div(count, wanted);
      const int64_t splits = ceil_div(count, chunk);
      const Scratch partial(size_t(splits * outputs) * sizeof(float));
      reduce_rows_split_kernel<SUM, T><<<dim3(static_cast<unsigned>(splits), static_cast<unsigned>(outputs)), kThreads, 0, s>>>(
          x, partial.as<float>(), count, chunk);
      check_launch("reduce rows split kernel");
      reduce_impl<SUM, float>(partial.as<float>(), out, {outputs, splits}, {1}, s);
      return;
    }
    if (count <= 1024) {
      reduce_rows_kernel<SUM, 32, T><<<static_cast<unsigned>(ceil_div(outputs, kThreads / 32)), kThreads, 0, s>>>(x, out, outputs, count);
    } else {
      reduce_rows_kernel<SUM, kThreads, T><<<static_cast<unsigned>(outputs), kThreads, 0, s>>>(x, out, outputs, count);
    }
    check_launch("reduce rows kernel");
    return;
  }

  const bool columns_layout = red.rank == 1 && kept.rank == 1 && kept.stride[0][0] == 1 && red.stride[0][0] == outputs;
  if (columns_layout && outputs % 8 == 0 && vector_aligned({x})) {
    const int64_t tiles = ceil_div(outputs, kColumnTile);
    // chunks of at least 64 rows, enough of them for a few blocks a multiprocessor
    const int64_t target = int64_t(device_info().sm_count) * 4;
    int64_t splits = count <= 1024 ? 1 : std::min(ceil_div(target, tiles), ceil_div(count, 64));
    const int64_t chunk = ceil_div(count, splits);
    splits = ceil_div(count, chunk);
    const auto launch = [&](float* dst) {
      reduce_columns_kernel<SUM, T><<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits)), kThreads, 0, s>>>(
          x, dst, count, outputs, chunk);
      check_launch("reduce columns kernel");
    };
    if (splits == 1) return launch(out);
    const Scratch partial(size_t(splits * outputs) * sizeof(float));
    launch(partial.as<float>());
    reduce_impl<SUM, float>(partial.as<float>(), out, {splits, outputs}, {0}, s);
    return;
  }

  // split long reductions so that a few outputs still fill the device; partial results reduce again
  const int64_t target = int64_t(device_info().sm_count) * 2048;
  int64_t splits = 1;
  if (outputs < target && count > 256) splits = std::min<int64_t>({ceil_div(target, outputs), ceil_div(count, 128), 65535});
  const int64_t chunk = ceil_div(count, splits);
  splits = ceil_div(count, chunk);
  const dim3 grid(static_cast<unsigned>(ceil_div(outputs, kThreads)), static_cast<unsigned>(splits));
  if (splits == 1) {
    reduce_general_kernel<SUM, T><<<grid, kThreads, 0, s>>>(x, out, kept, red, outputs, count, chunk);
    check_launch("reduce kernel");
    return;
  }
  const Scratch partial(size_t(splits * outputs) * sizeof(float));
  reduce_general_kernel<SUM, T><<<grid, kThreads, 0, s>>>(x, partial.as<float>(), kept, red, outputs, count, chunk);
  check_launch("reduce kernel");
  reduce_impl<SUM, float>(partial.as<float>(), out, {splits, outputs}, {0}, s);
}

}  // namespace

void launch_reduce(ReduceOp op, const float* x, float* out, const std::vector<int64_t>& shape,
                   const std::vector<int64_t>& axes, cudaStream_t s) {
  if (op == ReduceOp::Sum) reduce_impl<true, float>(x, out, shape, axes, s);
  else reduce_impl<false, float>(x, out, shape, axes, s);
}

void launch_reduce_bf16(ReduceOp op, const void* x, float* out, const std::vector<int64_t>& shape,
                        const std::vector<int64_t>& axes, cudaStream_t s) {
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  if (op == ReduceOp::Sum) reduce_impl<true, __nv_bfloat16>(xb, out, shape, axes, s);
  else reduce_impl<false, __nv_bfloat16>(xb, out, shape, axes, s);
}

void launch_reduce_into(ReduceOp op, DType t, const void* x, DType out_t, void* out, const std::vector<int64_t>& shape,
                        const std::vector<int64_t>& axes, cudaStream_t s) {
  if (out_t != DType::F32 && out_t != t) fail(std::string("reduce: ") + dtype_name(t) + " input cannot give " + dtype_name(out_t));
  const auto into = [&](float* f) {
    if (t == DType::F32) launch_reduce(op, static_cast<const float*>(x), f, shape, axes, s);
    else launch_reduce_bf16(op, x, f, shape, axes, s);
  };
  if (out_t == DType::F32) return into(static_cast<float*>(out));
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); i++) {
    if (std::find(axes.begin(), axes.end(), int64_t(i)) == axes.end()) n *= shape[i];
  }
  // stream order frees the scratch after the cast
  const Scratch sums(size_t(std::max<int64_t>(n, 1)) * sizeof(float));
  into(sums.as<float>());
  launch_cast(sums.as<float>(), DType::F32, out, out_t, n, s);
}

}  // namespace ln
