#include "nn.h"

#include <algorithm>
#include <climits>

#include "../device.h"
#include "../memory.h"
#include "element_types.cuh"
#include "elementwise.h"
#include "launch_util.cuh"
#include "reduce.h"

namespace ln {

namespace {

// Each row is handled by GROUP consecutive threads: a warp for short rows, the whole block for long ones.
struct RowSpot {
  int64_t row;
  int lane;
  bool valid;
};

template <int GROUP>
__device__ __forceinline__ RowSpot row_spot(int64_t rows) {
  constexpr int kRowsPerBlock = kThreads / GROUP;
  RowSpot r;
  r.row = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / GROUP;
  r.lane = threadIdx.x % GROUP;
  r.valid = r.row < rows;
  return r;
}

template <typename Launch>
void by_row_length(int64_t rows, int64_t cols, Launch&& launch) {
  if (cols <= 1024) {
    launch.template operator()<32>(static_cast<unsigned>(ceil_div(rows, kThreads / 32)));
  } else {
    launch.template operator()<kThreads>(static_cast<unsigned>(rows));
  }
}

template <int GROUP>
__global__ void softmax_kernel(const float* __restrict__ x, float* __restrict__ out, int64_t rows, int64_t cols, bool log) {
  const RowSpot r = row_spot<GROUP>(rows);
  const float* p = x + (r.valid ? r.row : 0) * cols;
  float m = -INFINITY;
  if (r.valid) for (int64_t j = r.lane; j < cols; j += GROUP) m = fmaxf(m, p[j]);
  m = group_max<GROUP>(m);
  if (m == -INFINITY) m = 0.0f;  // a row of -inf: keep the CPU backend's convention
  float sum = 0.0f;
  if (r.valid) for (int64_t j = r.lane; j < cols; j += GROUP) sum += expf(p[j] - m);
  sum = group_sum<GROUP>(sum);
  if (!r.valid) return;
  float* o = out + r.row * cols;
  if (log) {
    const float lse = m + logf(sum);
    for (int64_t j = r.lane; j < cols; j += GROUP) o[j] = p[j] - lse;
  } else {
    const float inv = 1.0f / sum;
    for (int64_t j = r.lane; j < cols; j += GROUP) o[j] = expf(p[j] - m) * inv;
  }
}

template <int GROUP>
__global__ void softmax_backward_kernel(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                        int64_t rows, int64_t cols, bool log) {
  const RowSpot r = row_spot<GROUP>(rows);
  const int64_t base = (r.valid ? r.row : 0) * cols;
  float s = 0.0f;
  if (r.valid) {
    for (int64_t j = r.lane; j < cols; j += GROUP) s += log ? dy[base + j] : dy[base + j] * y[base + j];
  }
  s = group_sum<GROUP>(s);
  if (!r.valid) return;
  for (int64_t j = r.lane; j < cols; j += GROUP) {
    const int64_t i = base + j;
    dx[i] = log ? dy[i] - expf(y[i]) * s : y[i] * (dy[i] - s);
  }
}

template <int GROUP, typename T>
__global__ void layer_norm_kernel(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                  T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                                  int64_t cols, float eps) {
  const RowSpot r = row_spot<GROUP>(rows);
  const T* p = x + (r.valid ? r.row : 0) * cols;
  float s = 0.0f;
  if (r.valid) for (int64_t j = r.lane; j < cols; j += GROUP) s += ldf(p[j]);
  const float mu = group_sum<GROUP>(s) / float(cols);
  float v = 0.0f;
  if (r.valid) {
    for (int64_t j = r.lane; j < cols; j += GROUP) {
      const float d = ldf(p[j]) - mu;
      v += d * d;
    }
  }
  const float rs = 1.0f / sqrtf(group_sum<GROUP>(v) / float(cols) + eps);
  if (!r.valid) return;
  if (r.lane == 0) {
    mean[r.row] = mu;
    rstd[r.row] = rs;
  }
  T* o = y + r.row * cols;
  for (int64_t j = r.lane; j < cols; j += GROUP) {
    float t = (ldf(p[j]) - mu) * rs;
    if (gamma) t *= gamma[j];
    if (beta) t += beta[j];
    stf(o[j], t);
  }
}

template <int GROUP, typename T>
__global__ void layer_norm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ gamma,
                                     const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                                     int64_t rows, int64_t cols) {
  const RowSpot r = row_spot<GROUP>(rows);
  const int64_t base = (r.valid ? r.row : 0) * cols;
  const float mu = r.valid ? mean[r.row] : 0.0f, rs = r.valid ? rstd[r.row] : 0.0f;
  float sg = 0.0f, sgx = 0.0f;
  if (r.valid) {
    for (int64_t j = r.lane; j < cols; j += GROUP) {
      const float xhat = (ldf(x[base + j]) - mu) * rs;
      const float g = gamma ? ldf(dy[base + j]) * gamma[j] : ldf(dy[base + j]);
      sg += g;
      sgx += g * xhat;
    }
  }
  const float mean_g = group_sum<GROUP>(sg) / float(cols);
  const float mean_gx = group_sum<GROUP>(sgx) / float(cols);
  if (!r.valid) return;
  for (int64_t j = r.lane; j < cols; j += GROUP) {
    const float xhat = (ldf(x[base + j]) - mu) * rs;
    const float g = gamma ? ldf(dy[base + j]) * gamma[j] : ldf(dy[base + j]);
    stf(dx[base + j], rs * (g - mean_g - xhat * mean_gx));
  }
}

// Column sums of dy * xhat and dy over a range of rows: one thread per column, gridDim.y row ranges.
template <typename T>
__global__ void layer_norm_param_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, float* __restrict__ d_gamma, float* __restrict__ d_beta,
                                        int64_t rows, int64_t cols, int64_t chunk) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float sg = 0.0f, sb = 0.0f;
  for (int64_t r = r0; r < r1; r++) {
    const float g = ldf(dy[r * cols + j]);
    sg += g * (ldf(x[r * cols + j]) - mean[r]) * rstd[r];
    sb += g;
  }
  if (d_gamma) d_gamma[blockIdx.y * cols + j] = sg;
  if (d_beta) d_beta[blockIdx.y * cols + j] = sb;
}

// Fails the queued index check (device.h) with the bad value at `position`; of several, the slot keeps the
// first position (the high half of the word).
__device__ void report_bad_index(const QueuedCheck& check, int64_t position, int32_t value) {
  const auto high = static_cast<unsigned long long>(min(position, int64_t(UINT32_MAX)));
  atomicMin(check.slots + check.id, (high << 32) | static_cast<uint32_t>(value));
  atomicMin(check.failed, check.id);
}

// Softmax over the first `classes` columns of each row; the columns past it are vocabulary padding.
template <int GROUP, typename T>
__global__ void cross_entropy_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets, float* __restrict__ loss,
                                     float* __restrict__ lse, int64_t rows, int64_t cols, int64_t classes, int32_t ignore_index,
                                     QueuedCheck check) {
  const RowSpot r = row_spot<GROUP>(rows);
  const T* p = logits + (r.valid ? r.row : 0) * cols;
  // one pass: each thread's running max and its sum of exponentials relative to it
  float tm = -INFINITY, ts = 0.0f;
  if (r.valid) {
    for (int64_t j = r.lane; j < classes; j += GROUP) {
      const float x = ldf(p[j]);
      if (x > tm) {
        ts = ts * expf(tm - x) + 1.0f;
        tm = x;
      } else {
        ts += expf(x - tm);
      }
    }
  }
  const float m = group_max<GROUP>(tm);
  const float sum = group_sum<GROUP>(tm == -INFINITY ? ts : ts * expf(tm - m));
  if (!r.valid || r.lane != 0) return;
  const float l = m + logf(sum);
  lse[r.row] = l;
  const int32_t t = targets[r.row];
  if (t == ignore_index) {
    loss[r.row] = 0.0f;
  } else if (t < 0 || t >= classes) {
    report_bad_index(check, r.row, t);
    loss[r.row] = NAN;
  } else {
    loss[r.row] = l - ldf(p[t]);
  }
}

// One block a row (no division per element); writes every element: padding columns (j >= classes) and
// ignored rows get 0.
template <typename T>
__global__ void cross_entropy_backward_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                              const float* __restrict__ lse, const float* __restrict__ d_loss,
                                              T* __restrict__ d, int64_t cols, int64_t classes, int32_t ignore_index) {
  const int64_t row = blockIdx.x;
  const int32_t t = targets[row];
  const int64_t live = t == ignore_index ? 0 : classes;  // columns with a nonzero gradient
  const float w = live ? d_loss[row] : 0.0f;
  const float l = live ? lse[row] : 0.0f;
  const T* p = logits + row * cols;
  T* o = d + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float v = 0.0f;
    if (j < live) v = w * expf(ldf(p[j]) - l) - (j == t ? w : 0.0f);
    stf(o[j], v);
  }
}

// The same on bfloat16 pairs (even rows): one 4-byte load and store a thread a step.
__global__ void cross_entropy_backward_pairs_kernel(const __nv_bfloat162* __restrict__ logits, const int32_t* __restrict__ targets,
                                                    const float* __restrict__ lse, const float* __restrict__ d_loss,
                                                    __nv_bfloat162* __restrict__ d, int64_t half_cols, int64_t classes,
                                                    int32_t ignore_index) {
  const int64_t row = blockIdx.x;
  const int32_t t = targets[row];
  const int64_t live = t == ignore_index ? 0 : classes;
  const float w = live ? d_loss[row] : 0.0f;
  const float l = live ? lse[row] : 0.0f;
  const __nv_bfloat162* p = logits + row * half_cols;
  __nv_bfloat162* o = d + row * half_cols;
  for (int64_t j = threadIdx.x; j < half_cols; j += blockDim.x) {
    const float2 x = __bfloat1622float2(p[j]);
    const int64_t c = 2 * j;
    float2 v;
    v.x = c < live ? w * expf(x.x - l) - (c == t ? w : 0.0f) : 0.0f;
    v.y = c + 1 < live ? w * expf(x.y - l) - (c + 1 == t ? w : 0.0f) : 0.0f;
    o[j] = __float22bfloat162_rn(v);
  }
}

__global__ void gather_kernel(const float* __restrict__ table, int64_t table_rows, int64_t cols, const int32_t* __restrict__ indices,
                              int64_t count, float* __restrict__ out, QueuedCheck check) {
  const int64_t n = count * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, j = e - i * cols;
    const int32_t row = indices[i];
    if (row < 0 || row >= table_rows) {
      if (j == 0) report_bad_index(check, i, row);
      out[e] = NAN;
    } else {
      out[e] = table[row * cols + j];
    }
  }
}

__global__ void scatter_add_kernel(const float* __restrict__ d_out, const int32_t* __restrict__ indices, int64_t count,
                                   int64_t table_rows, int64_t cols, float* __restrict__ out, QueuedCheck check) {
  const int64_t n = count * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / cols, j = e - i * cols;
    const int32_t row = indices[i];
    if (row < 0 || row >= table_rows) {
      if (j == 0) report_bad_index(check, i, row);
    } else {
      atomicAdd(out + row * cols + j, d_out[e]);
    }
  }
}

}  // namespace

void launch_softmax(const float* x, float* out, int64_t rows, int64_t cols, bool log, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  by_row_length(rows, cols, [&]<int G>(unsigned blocks) { softmax_kernel<G><<<blocks, kThreads, 0, s>>>(x, out, rows, cols, log); });
  check_launch("softmax kernel");
}

void launch_softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  by_row_length(rows, cols, [&]<int G>(unsigned blocks) {
    softmax_backward_kernel<G><<<blocks, kThreads, 0, s>>>(y, dy, dx, rows, cols, log);
  });
  check_launch("softmaxBackward kernel");
}

void launch_layer_norm(DType t, const void* x, const float* gamma, const float* beta, void* y, float* mean, float* rstd, int64_t rows,
                       int64_t cols, float eps, cudaStream_t s) {
  if (rows == 0) return;
  float_typed(t, "layerNorm", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    by_row_length(rows, cols, [&]<int G>(unsigned blocks) {
      layer_norm_kernel<G, T><<<blocks, kThreads, 0, s>>>(static_cast<const T*>(x), gamma, beta, static_cast<T*>(y), mean, rstd, rows,
                                                           cols, eps);
    });
  });
  check_launch("layerNorm kernel");
}

namespace {

template <typename T>
void layer_norm_backward_impl(const T* dy, const T* x, const float* gamma, const float* mean, const float* rstd, T* dx,
                              float* d_gamma, float* d_beta, int64_t rows, int64_t cols, cudaStream_t s) {
  by_row_length(rows, cols, [&]<int G>(unsigned blocks) {
    layer_norm_dx_kernel<G, T><<<blocks, kThreads, 0, s>>>(dy, x, gamma, mean, rstd, dx, rows, cols);
  });
  check_launch("layerNormBackward kernel");
  if (!d_gamma && !d_beta) return;
  // enough row ranges to fill the device; the partial sums are reduced in a second pass
  const int64_t col_blocks = ceil_div(cols, kThreads);
  const int64_t want = std::max<int64_t>(1, int64_t(device_info().sm_count) * 4 / col_blocks);
  const int64_t splits = std::min<int64_t>({want, ceil_div(rows, 32), 65535});
  const int64_t chunk = ceil_div(rows, splits);
  const int64_t used = ceil_div(rows, chunk);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(used));
  if (used == 1) {
    layer_norm_param_kernel<T><<<grid, kThreads, 0, s>>>(dy, x, mean, rstd, d_gamma, d_beta, rows, cols, chunk);
    check_launch("layerNorm parameter-gradient kernel");
    return;
  }
  size_t cap = 0;
  float* partial = static_cast<float*>(allocator().allocate(size_t(2 * used * cols) * sizeof(float), cap));
  float* pg = partial;
  float* pb = partial + used * cols;
  layer_norm_param_kernel<T><<<grid, kThreads, 0, s>>>(dy, x, mean, rstd, pg, pb, rows, cols, chunk);
  try {
    check_launch("layerNorm parameter-gradient kernel");
    if (d_gamma) launch_reduce(ReduceOp::Sum, pg, d_gamma, {used, cols}, {0}, s);
    if (d_beta) launch_reduce(ReduceOp::Sum, pb, d_beta, {used, cols}, {0}, s);
  } catch (...) {
    allocator().release(partial, cap);
    throw;
  }
  allocator().release(partial, cap);
}

}  // namespace

void launch_layer_norm_backward(DType t, const void* dy, const void* x, const float* gamma, const float* mean, const float* rstd,
                                void* dx, float* d_gamma, float* d_beta, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  float_typed(t, "layerNormBackward", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    layer_norm_backward_impl<T>(static_cast<const T*>(dy), static_cast<const T*>(x), gamma, mean, rstd, static_cast<T*>(dx), d_gamma,
                                d_beta, rows, cols, s);
  });
}

void launch_cross_entropy(DType t, const void* logits, const int32_t* targets, float* loss, float* lse, int64_t rows, int64_t cols,
                          int64_t classes, int32_t ignore_index, const QueuedCheck& check, cudaStream_t s) {
  if (rows == 0) return;
  float_typed(t, "crossEntropy", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    // the row groups are sized by the classes a row reads, not by its padded width
    by_row_length(rows, classes, [&]<int G>(unsigned blocks) {
      cross_entropy_kernel<G, T><<<blocks, kThreads, 0, s>>>(static_cast<const T*>(logits), targets, loss, lse, rows, cols, classes,
                                                              ignore_index, check);
    });
  });
  check_launch("crossEntropy kernel");
}

void launch_cross_entropy_backward(DType t, const void* logits, const int32_t* targets, const float* lse, const float* d_loss,
                                   void* d_logits, int64_t rows, int64_t cols, int64_t classes, int32_t ignore_index,
                                   cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (rows > INT32_MAX) fail("crossEntropyBackward: more than 2^31 - 1 rows");
  if (t == DType::BF16 && cols % 2 == 0) {
    cross_entropy_backward_pairs_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        static_cast<const __nv_bfloat162*>(logits), targets, lse, d_loss, static_cast<__nv_bfloat162*>(d_logits), cols / 2, classes,
        ignore_index);
  } else {
    float_typed(t, "crossEntropyBackward", [&](auto* tag) {
      using T = element_of<decltype(tag)>;
      cross_entropy_backward_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
          static_cast<const T*>(logits), targets, lse, d_loss, static_cast<T*>(d_logits), cols, classes, ignore_index);
    });
  }
  check_launch("crossEntropyBackward kernel");
}

void launch_gather(const float* table, int64_t table_rows, int64_t cols, const int32_t* indices, int64_t count, float* out,
                   const QueuedCheck& check, cudaStream_t s) {
  const int64_t n = count * cols;
  if (n == 0) return;
  gather_kernel<<<grid_for(n), kThreads, 0, s>>>(table, table_rows, cols, indices, count, out, check);
  check_launch("gather kernel");
}

void launch_scatter_add(const float* d_out, const int32_t* indices, int64_t count, int64_t table_rows, int64_t cols, float* out,
                        const QueuedCheck& check, cudaStream_t s) {
  const int64_t n = count * cols;
  if (n == 0) return;
  scatter_add_kernel<<<grid_for(n), kThreads, 0, s>>>(d_out, indices, count, table_rows, cols, out, check);
  check_launch("scatterAdd kernel");
}

}  // namespace ln
