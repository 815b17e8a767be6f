#include "layout.h"

#include "launch_util.cuh"

namespace ln {

namespace {

// out[op1 offset] = in[op0 offset] over the layout's index space.
template <typename T, int RANK, typename Index>
__global__ void strided_copy_kernel(const T* __restrict__ in, T* __restrict__ out, StridedLayout l, Index n) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < n; i += Index(gridDim.x) * blockDim.x) {
    Index src, dst;
    strided_offsets<RANK>(l, i, src, dst);
    out[dst] = in[src];
  }
}

// Batched transpose [batch, rows, cols] -> [batch, cols, rows] through a padded shared tile, so that both
// the reads and the writes are coalesced.
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t rows, int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t b = blockIdx.z;
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  const T* src = in + b * rows * cols;
  T* dst = out + b * rows * cols;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) dst[c * rows + r] = tile[threadIdx.x][i];
  }
}

template <typename Index>
__global__ void strided_add_kernel(float* __restrict__ dst, const float* __restrict__ src, StridedLayout l, Index n) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < n; i += Index(gridDim.x) * blockDim.x) {
    Index d, s;
    strided_offsets<0>(l, i, d, s);
    dst[d] += src[s];
  }
}

template <typename T>
void strided_copy(const void* in, void* out, const StridedLayout& l, int64_t n, cudaStream_t s) {
  const T* src = static_cast<const T*>(in);
  T* dst = static_cast<T*>(out);
  // [batch?, R, C] read as its transpose: the tiled kernel
  const int r = l.rank;
  if (r >= 2 && r <= 3) {
    const int64_t rows = l.shape[r - 1], cols = l.shape[r - 2];  // output is [.., cols, rows]
    const bool swap = l.stride[0][r - 1] == cols && l.stride[0][r - 2] == 1 && l.stride[1][r - 1] == 1 &&
                      l.stride[1][r - 2] == rows && (r == 2 || (l.stride[0][0] == rows * cols && l.stride[1][0] == rows * cols));
    const int64_t batch = r == 3 ? l.shape[0] : 1;
    if (swap && batch <= 65535 && ceil_div(rows, 32) <= 65535) {
      const dim3 grid(static_cast<unsigned>(ceil_div(cols, 32)), static_cast<unsigned>(ceil_div(rows, 32)), static_cast<unsigned>(batch));
      transpose_kernel<T><<<grid, dim3(32, 8), 0, s>>>(src, dst, rows, cols);
      check_launch("transpose kernel");
      return;
    }
  }
  if (!fits_int32(l, n)) {
    strided_copy_kernel<T, 0, int64_t><<<grid_for(n), kThreads, 0, s>>>(src, dst, l, n);
  } else {
    dispatch_rank(l.rank, [&]<int RANK>() {
      strided_copy_kernel<T, RANK, int32_t><<<grid_for(n), kThreads, 0, s>>>(src, dst, l, static_cast<int32_t>(n));
    });
  }
  check_launch("strided copy kernel");
}

void strided_copy_any(const void* in, void* out, size_t elem_size, const StridedLayout& l, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  switch (elem_size) {
    case 2: return strided_copy<uint16_t>(in, out, l, n, s);
    case 4: return strided_copy<uint32_t>(in, out, l, n, s);
    case 8: return strided_copy<uint64_t>(in, out, l, n, s);
  }
  fail("strided copy: unsupported element size " + std::to_string(elem_size));
}

}  // namespace

void launch_permute(const void* x, void* out, size_t elem_size, const Dims& shape, const Dims& perm, cudaStream_t s) {
  const Dims in_strides = contiguous_strides(shape);
  Dims out_shape(shape.size()), read(shape.size());
  for (size_t i = 0; i < perm.size(); i++) {
    out_shape[i] = shape[perm[i]];
    read[i] = in_strides[perm[i]];
  }
  const StridedLayout l = collapse(out_shape, {read, contiguous_strides(out_shape)}, "permute");
  strided_copy_any(x, out, elem_size, l, product(out_shape), s);
}

void launch_slice(const void* x, void* out, size_t elem_size, const Dims& shape, const Dims& begin, const Dims& size,
                  cudaStream_t s) {
  const Dims strides = contiguous_strides(shape);
  int64_t base = 0;
  for (size_t i = 0; i < shape.size(); i++) base += begin[i] * strides[i];
  const StridedLayout l = collapse(size, {strides, contiguous_strides(size)}, "slice");
  const char* src = static_cast<const char*>(x) + base * int64_t(elem_size);
  strided_copy_any(src, out, elem_size, l, product(size), s);
}

void launch_add_slice_into(float* dst, const Dims& dst_shape, const float* src, const Dims& src_shape, const Dims& begin,
                           cudaStream_t s) {
  const int64_t n = product(src_shape);
  if (n == 0) return;
  const Dims strides = contiguous_strides(dst_shape);
  int64_t base = 0;
  for (size_t i = 0; i < dst_shape.size(); i++) base += begin[i] * strides[i];
  const StridedLayout l = collapse(src_shape, {strides, contiguous_strides(src_shape)}, "addSliceInto");
  if (fits_int32(l, n)) strided_add_kernel<int32_t><<<grid_for(n), kThreads, 0, s>>>(dst + base, src, l, static_cast<int32_t>(n));
  else strided_add_kernel<int64_t><<<grid_for(n), kThreads, 0, s>>>(dst + base, src, l, n);
  check_launch("addSliceInto kernel");
}

}  // namespace ln
