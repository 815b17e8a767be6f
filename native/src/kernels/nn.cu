#include "nn.h"

#include <climits>

#include "../device.h"
#include "element_types.cuh"
#include "elementwise.h"
#include "launch_util.cuh"
#include "row_groups.cuh"

namespace ln {

namespace {

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
