#include "nn.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "../device.h"
#include "bulk_copy.cuh"
#include "element_types.cuh"
#include "elementwise.h"
#include "launch_util.cuh"
#include "math.cuh"
#include "row_groups.cuh"
#include "vector_access.cuh"

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

// Cross-entropy with the gradient of the logits in the same kernel, for a backward seeded with 1: loss and
// lse as cross_entropy_kernel, and d = w (softmax - onehot(target)) over the classes, 0 on the padding
// columns and on ignored rows, with w = *weight (a mean's 1 / count) or 1: what cross_entropy_backward_kernel
// gives for d_loss = w, up to float rounding (the exponentials here are in base 2, a fused multiply-add and
// one ex2 an element, which keeps the kernel at the speed of memory). A block reads each row twice, for its
// max and sum and then for its gradient: one resident block a multiprocessor walks rows gridDim.x apart,
// so that the rows in flight (132 x 200 KB for a 100K vocabulary in bf16) are still in L2 the second time,
// and the gradient is stored past L2 (streaming) so as not to evict them. VEC: 16-byte pieces (cols % kN
// == 0, aligned rows).
constexpr int kLossThreads = 1024;
constexpr int kLossAhead = 4;  // loads in flight a thread in the shared-memory loss kernel's first pass
constexpr float kLog2E = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

template <typename T, bool VEC>
__global__ void __launch_bounds__(kLossThreads)
    cross_entropy_with_grad_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets, const float* __restrict__ weight,
                                   float* __restrict__ loss, float* __restrict__ lse, T* __restrict__ d, int64_t rows, int64_t cols,
                                   int64_t classes, int32_t ignore_index, QueuedCheck check) {
  constexpr int kN = Pack<T>::kN;
  const float w = weight ? *weight : 1.0f;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* p = logits + row * cols;
    T* o = d + row * cols;
    // in units of log2e: the running max tm of x log2e and the sum ts of 2^(x log2e - tm)
    float tm = -INFINITY, ts = 0.0f;
    const auto add = [&](float x) {
      const float y = x * kLog2E;
      if (y > tm) {
        ts = ts * exp2f(tm - y) + 1.0f;
        tm = y;
      } else {
        ts += exp2f(y - tm);
      }
    };
    int64_t scalar_from = 0;
    if constexpr (VEC) {
      const int64_t pieces = classes / kN;  // the pieces wholly within the classes
#pragma unroll 4
      for (int64_t v = threadIdx.x; v < pieces; v += kLossThreads) {
        float f[kN];
        load_piece(p + v * kN, f);
        // one rescale a piece, by its max (a NaN or -inf reaches the sum as in `add`)
        float pm = f[0];
#pragma unroll
        for (int i = 1; i < kN; i++) pm = fmaxf(pm, f[i]);
        pm *= kLog2E;
        if (pm > tm) {
          ts *= exp2f(tm - pm);
          tm = pm;
        }
#pragma unroll
        for (int i = 0; i < kN; i++) ts += exp2f(fmaf(f[i], kLog2E, -tm));
      }
      scalar_from = pieces * kN;
    }
    for (int64_t j = scalar_from + threadIdx.x; j < classes; j += kLossThreads) add(ldf(p[j]));
    const float m = group_max<kLossThreads>(tm);
    const float sum = group_sum<kLossThreads>(tm == -INFINITY ? ts : ts * exp2f(tm - m));
    const float l2 = m + log2f(sum);  // the log-sum-exp in units of log2e
    const float l = l2 * kLn2;
    const int32_t t = targets[row];
    if (threadIdx.x == 0) {
      lse[row] = l;
      if (t == ignore_index) {
        loss[row] = 0.0f;
      } else if (t < 0 || t >= classes) {
        report_bad_index(check, row, t);
        loss[row] = NAN;
      } else {
        loss[row] = l - ldf(p[t]);
      }
    }
    const int64_t live = t == ignore_index ? 0 : classes;  // columns with a nonzero gradient
    const float wr = live ? w : 0.0f;
    const auto grad = [&](float x, int64_t j) {
      return j < live ? wr * exp2f(fmaf(x, kLog2E, -l2)) - (j == t ? wr : 0.0f) : 0.0f;
    };
    if constexpr (VEC) {
      for (int64_t v = threadIdx.x; v < cols / kN; v += kLossThreads) {
        float f[kN];
        load_piece(p + v * kN, f);
        const int64_t j0 = v * kN;
        if (j0 + kN <= live && (t < j0 || t >= j0 + kN)) {  // most pieces: all classes, not the target
#pragma unroll
          for (int i = 0; i < kN; i++) f[i] = wr * exp2f(fmaf(f[i], kLog2E, -l2));
        } else {
#pragma unroll
          for (int i = 0; i < kN; i++) f[i] = grad(f[i], j0 + i);
        }
        __stcs(reinterpret_cast<uint4*>(o + v * kN), Pack<T>::pack(f));
      }
    } else {
      for (int64_t j = threadIdx.x; j < cols; j += kLossThreads) stf(o[j], grad(ldf(p[j]), j));
    }
  }
}

// The VEC case of the kernel above with the row kept in shared memory: the first pass (max and sum) reads
// the row from memory once and leaves it in shared memory, where the second pass (the gradient) reads it,
// so the logits are read from memory once whatever L2 holds. For rows of up to the device's opt-in shared
// memory a block (bf16: about 116K columns). The scalar tail of the classes (classes % kN) is read from
// memory in both passes.
template <typename T>
__global__ void __launch_bounds__(kLossThreads)
    cross_entropy_with_grad_smem_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                        const float* __restrict__ weight, float* __restrict__ loss, float* __restrict__ lse,
                                        T* __restrict__ d, int64_t rows, int64_t cols, int64_t classes, int32_t ignore_index,
                                        QueuedCheck check) {
  extern __shared__ uint4 row_pieces[];
  constexpr int kN = Pack<T>::kN;
  const float w = weight ? *weight : 1.0f;
  const int64_t pieces = cols / kN, class_pieces = classes / kN;  // class_pieces: wholly within the classes
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* p = logits + row * cols;
    const uint4* pp = reinterpret_cast<const uint4*>(p);
    // in units of log2e: the running max tm of x log2e and the sum ts of 2^(x log2e - tm)
    float tm = -INFINITY, ts = 0.0f;
    // kLossAhead pieces a thread are loaded before any is used: with one block an SM (the row fills its
    // shared memory), one load at a time would leave too few bytes in flight to keep memory busy
    for (int64_t v0 = threadIdx.x; v0 < pieces; v0 += int64_t(kLossAhead) * kLossThreads) {
      uint4 raw[kLossAhead];
#pragma unroll
      for (int a = 0; a < kLossAhead; a++) {
        const int64_t v = v0 + int64_t(a) * kLossThreads;
        if (v < pieces) raw[a] = __ldcs(pp + v);  // read once: evict first
      }
#pragma unroll
      for (int a = 0; a < kLossAhead; a++) {
        const int64_t v = v0 + int64_t(a) * kLossThreads;
        if (v >= pieces) break;
        row_pieces[v] = raw[a];
        if (v >= class_pieces) continue;
        float f[kN];
        Pack<T>::unpack(raw[a], f);
        float pm = f[0];
#pragma unroll
        for (int i = 1; i < kN; i++) pm = fmaxf(pm, f[i]);
        pm *= kLog2E;
        if (pm > tm) {  // one rescale a piece, by its max (a NaN or -inf reaches the sum as below)
          ts *= exp2f(tm - pm);
          tm = pm;
        }
#pragma unroll
        for (int i = 0; i < kN; i++) ts += exp2f(fmaf(f[i], kLog2E, -tm));
      }
    }
    for (int64_t j = class_pieces * kN + threadIdx.x; j < classes; j += kLossThreads) {
      const float y = ldf(p[j]) * kLog2E;
      if (y > tm) {
        ts = ts * exp2f(tm - y) + 1.0f;
        tm = y;
      } else {
        ts += exp2f(y - tm);
      }
    }
    // the block reductions also order the row's shared-memory stores before the second pass reads them
    const float m = group_max<kLossThreads>(tm);
    const float sum = group_sum<kLossThreads>(tm == -INFINITY ? ts : ts * exp2f(tm - m));
    const float l2 = m + log2f(sum);  // the log-sum-exp in units of log2e
    const int32_t t = targets[row];
    if (threadIdx.x == 0) {
      lse[row] = l2 * kLn2;
      if (t == ignore_index) {
        loss[row] = 0.0f;
      } else if (t < 0 || t >= classes) {
        report_bad_index(check, row, t);
        loss[row] = NAN;
      } else {
        loss[row] = l2 * kLn2 - ldf(p[t]);
      }
    }
    const int64_t live = t == ignore_index ? 0 : classes;  // columns with a nonzero gradient
    const float wr = live ? w : 0.0f;
    T* o = d + row * cols;
    for (int64_t v = threadIdx.x; v < pieces; v += kLossThreads) {
      float f[kN];
      Pack<T>::unpack(row_pieces[v], f);
      const int64_t j0 = v * kN;
      if (j0 + kN <= live && (t < j0 || t >= j0 + kN)) {  // most pieces: all classes, not the target
#pragma unroll
        for (int i = 0; i < kN; i++) f[i] = wr * exp2f(fmaf(f[i], kLog2E, -l2));
      } else {
#pragma unroll
        for (int i = 0; i < kN; i++) {
          const int64_t j = j0 + i;
          f[i] = j < live ? wr * exp2f(fmaf(f[i], kLog2E, -l2)) - (j == t ? wr : 0.0f) : 0.0f;
        }
      }
      __stcs(reinterpret_cast<uint4*>(o + j0), Pack<T>::pack(f));
    }
    __syncthreads();  // the next row overwrites the pieces
  }
}

// The kernel above on Hopper, with the row brought into shared memory by bulk copies (bulk_copy.cuh) in
// chunks of kBulkChunkPieces pieces, each with its own barrier: as soon as the block has written the
// gradient of chunk c of a row, one thread starts the copy of chunk c of its next row into the same
// place, so the next row streams in while this one is still being written, with no registers held for
// it and any number of bytes in flight. The first pass (max and sum) takes each chunk as it lands.
// Within a row, indices are 32-bit (a row fits in shared memory), and the exponentials flush results
// below 2^-126 to zero (exp2_ftz), which no sum or gradient here can tell: the kernel issues few
// instructions beside its loads and stores.
constexpr int kBulkChunkPieces = 2 * kLossThreads;  // two 16-byte pieces a thread: every thread has work
constexpr int kBulkMaxChunks = 16;

template <typename T>
__global__ void __launch_bounds__(kLossThreads)
    cross_entropy_with_grad_bulk_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                        const float* __restrict__ weight, float* __restrict__ loss, float* __restrict__ lse,
                                        T* __restrict__ d, int64_t rows, int64_t cols, int64_t classes, int32_t ignore_index,
                                        QueuedCheck check) {
#if __CUDA_ARCH__ >= 900
  extern __shared__ uint4 row_pieces[];
  __shared__ uint64_t chunk_landed[kBulkMaxChunks];
  constexpr int kN = Pack<T>::kN;
  const float w = weight ? *weight : 1.0f;
  // pieces of a row, and those wholly within the classes
  const int pieces = static_cast<int>(cols / kN), class_pieces = static_cast<int>(classes / kN);
  const int chunks = (pieces + kBulkChunkPieces - 1) / kBulkChunkPieces;
  // chunk c of row r into its place
  const auto load_chunk = [&](int64_t r, int c) {
    const int first = c * kBulkChunkPieces, count = min(pieces - first, kBulkChunkPieces);
    bulk::load(row_pieces + first, reinterpret_cast<const uint4*>(logits + r * cols) + first, static_cast<uint32_t>(count) * 16u,
               &chunk_landed[c]);
  };
  int64_t row = blockIdx.x;
  if (threadIdx.x == 0) {
    for (int c = 0; c < chunks; c++) bulk::barrier_init(&chunk_landed[c]);
    bulk::fence_barrier_init();
    if (row < rows)
      for (int c = 0; c < chunks; c++) load_chunk(row, c);
  }
  __syncthreads();
  for (uint32_t parity = 0; row < rows; parity ^= 1) {
    const T* p = logits + row * cols;
    // in units of log2e: the running max tm of x log2e and the sum ts of 2^(x log2e - tm)
    float tm = -INFINITY, ts = 0.0f;
    for (int c = 0; c < chunks; c++) {
      bulk::wait(&chunk_landed[c], parity);
      const int end = min(class_pieces, (c + 1) * kBulkChunkPieces);
      for (int v = c * kBulkChunkPieces + threadIdx.x; v < end; v += kLossThreads) {
        float f[kN];
        Pack<T>::unpack(row_pieces[v], f);
        float pm = f[0];
#pragma unroll
        for (int i = 1; i < kN; i++) pm = fmaxf(pm, f[i]);
        pm *= kLog2E;
        if (pm > tm) {  // one rescale a piece, by its max (a NaN or -inf reaches the sum as below)
          ts *= exp2_ftz(tm - pm);
          tm = pm;
        }
#pragma unroll
        for (int i = 0; i < kN; i++) ts += exp2_ftz(fmaf(f[i], kLog2E, -tm));
      }
    }
    for (int j = class_pieces * kN + threadIdx.x; j < classes; j += kLossThreads) {
      const float y = ldf(p[j]) * kLog2E;
      if (y > tm) {
        ts = ts * exp2_ftz(tm - y) + 1.0f;
        tm = y;
      } else {
        ts += exp2_ftz(y - tm);
      }
    }
    const float m = group_max<kLossThreads>(tm);
    const float sum = group_sum<kLossThreads>(tm == -INFINITY ? ts : ts * exp2_ftz(tm - m));
    const float l2 = m + log2f(sum);  // the log-sum-exp in units of log2e
    const int32_t t = targets[row];
    if (threadIdx.x == 0) {
      lse[row] = l2 * kLn2;
      if (t == ignore_index) {
        loss[row] = 0.0f;
      } else if (t < 0 || t >= classes) {
        report_bad_index(check, row, t);
        loss[row] = NAN;
      } else {
        loss[row] = l2 * kLn2 - ldf(p[t]);
      }
    }
    const int live = t == ignore_index ? 0 : static_cast<int>(classes);  // columns with a nonzero gradient
    const float wr = live ? w : 0.0f;
    const int64_t next = row + gridDim.x;
    uint4* o = reinterpret_cast<uint4*>(d + row * cols);
    for (int c = 0; c < chunks; c++) {
      const int end = min(pieces, (c + 1) * kBulkChunkPieces);
      for (int v = c * kBulkChunkPieces + threadIdx.x; v < end; v += kLossThreads) {
        float f[kN];
        Pack<T>::unpack(row_pieces[v], f);
        const int j0 = v * kN;
        if (j0 + kN <= live && (t < j0 || t >= j0 + kN)) {  // most pieces: all classes, not the target
#pragma unroll
          for (int i = 0; i < kN; i++) f[i] = wr * exp2_ftz(fmaf(f[i], kLog2E, -l2));
        } else {
#pragma unroll
          for (int i = 0; i < kN; i++) {
            const int j = j0 + i;
            f[i] = j < live ? wr * exp2_ftz(fmaf(f[i], kLog2E, -l2)) - (j == t ? wr : 0.0f) : 0.0f;
          }
        }
        __stcs(o + v, Pack<T>::pack(f));
      }
      __syncthreads();  // chunk c has been read: the next row's may take its place
      if (threadIdx.x == 0 && next < rows) load_chunk(next, c);
    }
    row = next;
  }
#endif
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

void launch_cross_entropy_with_grad(DType t, const void* logits, const int32_t* targets, const float* weight, float* loss, float* lse,
                                    void* d_logits, int64_t rows, int64_t cols, int64_t classes, int32_t ignore_index,
                                    const QueuedCheck& check, cudaStream_t s) {
  if (rows == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(rows, device_info().sm_count));
  float_typed(t, "crossEntropyWithGrad", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    const auto* x = static_cast<const T*>(logits);
    auto* d = static_cast<T*>(d_logits);
    const size_t row_bytes = size_t(cols) * sizeof(T);
    // beside the row: the block reductions' static buffers (1 KB is ample)
    const bool row_fits = row_bytes + 1024 <= device_info().max_smem_optin;
    // the bulk-copy kernel on Hopper and later, unless LONGNET_CROSS_ENTROPY=smem asks for the other
    const char* env = std::getenv("LONGNET_CROSS_ENTROPY");
    const bool bulk = device_info().major >= 9 && !(env && std::strcmp(env, "smem") == 0) &&
                      ceil_div(cols / Pack<T>::kN, int64_t(kBulkChunkPieces)) <= kBulkMaxChunks;
    if (cols % Pack<T>::kN == 0 && vector_aligned({logits, d_logits}) && row_fits) {
      const auto kernel = bulk ? cross_entropy_with_grad_bulk_kernel<T> : cross_entropy_with_grad_smem_kernel<T>;
      allow_dynamic_smem(reinterpret_cast<const void*>(kernel), row_bytes, "crossEntropyWithGrad kernel");
      kernel<<<blocks, kLossThreads, row_bytes, s>>>(x, targets, weight, loss, lse, d, rows, cols, classes, ignore_index, check);
    } else if (cols % Pack<T>::kN == 0 && vector_aligned({logits, d_logits})) {
      cross_entropy_with_grad_kernel<T, true><<<blocks, kLossThreads, 0, s>>>(x, targets, weight, loss, lse, d, rows, cols, classes,
                                                                             ignore_index, check);
    } else {
      cross_entropy_with_grad_kernel<T, false><<<blocks, kLossThreads, 0, s>>>(x, targets, weight, loss, lse, d, rows, cols, classes,
                                                                              ignore_index, check);
    }
  });
  check_launch("crossEntropyWithGrad kernel");
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
