#include "layer_norm.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include <cuda_bf16.h>

#include "../device.h"
#include "../memory.h"
#include "attention_dsum.h"
#include "element_types.cuh"
#include "elementwise.h"
#include "launch_util.cuh"
#include "math.cuh"
#include "reduce.h"
#include "row_groups.cuh"
#include "vector_access.cuh"

namespace ln {

namespace {

// ---------------------------------------------------------------------------------------------------------
// Rows held in registers: a group of LANES threads owns a row of at most kRowBytes, read and written in
// 16-byte pieces. The forward reads x once and the backward reads dy and x once, where the general kernels
// below read them from global memory two or three times, two bytes at a time for bfloat16.

constexpr int kRowBytes = 8192;  // 4096 bfloat16 or 2048 float32 columns: at most 16 pieces a lane

// What a layer norm with a GELU input normalizes: gelu(x) (by the fast sigmoid); x otherwise.
template <bool GELU>
__device__ __forceinline__ float input_value(float x) {
  if constexpr (GELU) return gelu_fast(x);
  return x;
}

// Piece k of a row (k < cols / kN) is piece v = k / LANES of lane k % LANES: each step of v reads
// LANES * 16 contiguous bytes. NV pieces a lane cover rows of up to LANES * NV pieces. With GELU the rows
// normalized are gelu(x), computed once into float registers (never rounded to T).
template <typename T, int LANES, int NV, bool GELU>
__global__ void __launch_bounds__(kThreads)
    layer_norm_rows_kernel(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                           T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows, int cols,
                           float eps) {
  using P = Pack<T>;
  constexpr int kN = P::kN;
  const int lane = threadIdx.x % LANES, nvec = cols / kN;
  const int64_t row = blockIdx.x * int64_t(kThreads / LANES) + threadIdx.x / LANES;
  const bool valid = row < rows;  // groups past the end still take part in the shuffles
  const uint4* src = reinterpret_cast<const uint4*>(x) + (valid ? row : 0) * nvec;
  uint4 raw[NV];
#pragma unroll
  for (int v = 0; v < NV; v++) {
    const int k = v * LANES + lane;
    raw[v] = valid && k < nvec ? src[k] : make_uint4(0, 0, 0, 0);
  }
  float u[GELU ? NV * kN : 1];
  if constexpr (GELU) {
#pragma unroll
    for (int v = 0; v < NV; v++) {
      float f[kN];
      P::unpack(raw[v], f);
#pragma unroll
      for (int i = 0; i < kN; i++) u[v * kN + i] = gelu_fast(f[i]);  // gelu(0) = 0 past the row's end
    }
  }
  // piece v of the row being normalized
  auto values = [&](int v, float (&f)[kN]) {
    if constexpr (GELU) {
#pragma unroll
      for (int i = 0; i < kN; i++) f[i] = u[v * kN + i];
    } else {
      P::unpack(raw[v], f);
    }
  };
  // two passes over the registers: the mean, then the squared deviations from it
  float s = 0.0f;
#pragma unroll
  for (int v = 0; v < NV; v++) {
    float f[kN];
    values(v, f);  // zeros past the row's end
#pragma unroll
    for (int i = 0; i < kN; i++) s += f[i];
  }
  const float mu = group_sum<LANES>(s) / float(cols);
  float q = 0.0f;
#pragma unroll
  for (int v = 0; v < NV; v++) {
    if (v * LANES + lane >= nvec) continue;
    float f[kN];
    values(v, f);
#pragma unroll
    for (int i = 0; i < kN; i++) {
      const float d = f[i] - mu;
      q += d * d;
    }
  }
  const float rs = 1.0f / sqrtf(group_sum<LANES>(q) / float(cols) + eps);
  if (!valid) return;
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
  uint4* dst = reinterpret_cast<uint4*>(y) + row * nvec;
#pragma unroll
  for (int v = 0; v < NV; v++) {
    const int k = v * LANES + lane;
    if (k >= nvec) continue;
    float f[kN], g[kN], b[kN];
    values(v, f);
    if (gamma) load_f32(gamma + k * kN, g);
    if (beta) load_f32(beta + k * kN, b);
#pragma unroll
    for (int i = 0; i < kN; i++) {
      float t = (f[i] - mu) * rs;
      if (gamma) t *= g[i];
      if (beta) t += b[i];
      f[i] = t;
    }
    dst[k] = P::pack(f);
  }
}

// dx of rows held in registers, plus `addend` (another gradient of x, summed here) unless it is null.
// With SUMS the grid is sized to stay resident and each group walks rows gridDim.x * kGroups apart, adding
// dy * xhat and dy into per-lane column sums in registers; the block then adds its groups' sums in a fixed
// order (deterministic) and writes one row of partials to part_gamma and part_beta ([gridDim.x, cols];
// either may be null). This saves the second read of dy and x that separate column sums would need.
// With SUMS and part_dx, the column sums of dx as stored (a bias gradient, for the layer that made x) go
// the same way, run in shared memory: registers are full. With row_dots, each run of 2^dot_shift pieces of
// a row (at most 32; LANES >= 32 and rows that fill every lane's pieces) gives the dot product of dx as
// stored with x: rowsum(dO * O) for an attention whose output x is. With
// GELU the forward normalized gelu(x): xhat comes from gelu(x), and dx is multiplied by gelu'(x), both
// computed once a row into float registers. Those take the GELU instances to about 150 registers; capped
// at 128 (a few bytes spilled), two blocks share an SM, as they do without GELU.
template <typename T, int LANES, int NV, bool SUMS, bool GELU>
__global__ void __launch_bounds__(kThreads, GELU ? 2 : 1)
    layer_norm_dx_rows_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ gamma,
                              const float* __restrict__ mean, const float* __restrict__ rstd, const T* __restrict__ addend,
                              T* __restrict__ dx, float* __restrict__ part_gamma, float* __restrict__ part_beta,
                              float* __restrict__ part_dx, float* __restrict__ row_dots, int dot_shift, int64_t rows,
                              int cols) {
  using P = Pack<T>;
  constexpr int kN = P::kN, kGroups = kThreads / LANES;
  constexpr int kPieces = LANES * NV, kWidth = kPieces * kN;  // the widest row this instance takes
  const int lane = threadIdx.x % LANES, group = threadIdx.x / LANES, nvec = cols / kN;
  float acc_g[SUMS ? NV * kN : 1] = {}, acc_b[SUMS ? NV * kN : 1] = {};
  // SUMS: while rows are walked, each group's running column sums of dx (element i of piece k at
  // i * kPieces + k of the group's slice, so that a warp's lanes touch consecutive banks; each address is
  // one thread's); at the end, the groups' parameter-gradient sums
  __shared__ float buf[SUMS ? kGroups * kWidth : 1];
  const bool sum_dx = SUMS && part_dx != nullptr;
  float* const dx_sums = buf + (SUMS ? group * kWidth : 0);
  if (sum_dx) {
#pragma unroll
    for (int v = 0; v < NV; v++) {
#pragma unroll
      for (int i = 0; i < kN; i++) dx_sums[i * kPieces + v * LANES + lane] = 0.0f;
    }
  }
  // the bound depends on the block only, so whole warps iterate together
  for (int64_t first = blockIdx.x * int64_t(kGroups); first < rows; first += int64_t(gridDim.x) * kGroups) {
    const int64_t row = first + group;
    const bool valid = row < rows;
    const int64_t at = (valid ? row : 0) * nvec;
    const uint4* pdy = reinterpret_cast<const uint4*>(dy) + at;
    const uint4* px = reinterpret_cast<const uint4*>(x) + at;
    uint4 rdy[NV], rx[NV];
#pragma unroll
    for (int v = 0; v < NV; v++) {
      const int k = v * LANES + lane;
      const bool in = valid && k < nvec;
      rdy[v] = in ? pdy[k] : make_uint4(0, 0, 0, 0);
      rx[v] = in ? px[k] : make_uint4(0, 0, 0, 0);
    }
    const float mu = valid ? mean[row] : 0.0f, rs = valid ? rstd[row] : 0.0f;
    float u[GELU ? NV * kN : 1], slope[GELU ? NV * kN : 1];
    if constexpr (GELU) {
#pragma unroll
      for (int v = 0; v < NV; v++) {
        float f[kN];
        P::unpack(rx[v], f);
#pragma unroll
        for (int i = 0; i < kN; i++) gelu_fast_with_derivative(f[i], u[v * kN + i], slope[v * kN + i]);
      }
    }
    // piece v (the row's piece k) of both passes: dy, the normalized input (x or gelu(x)) and g = dy * gamma
    // (dy without gamma)
    auto terms = [&](int v, int k, float (&fd)[kN], float (&fx)[kN], float (&g)[kN]) {
      float gm[kN];
      P::unpack(rdy[v], fd);
      if constexpr (GELU) {
#pragma unroll
        for (int i = 0; i < kN; i++) fx[i] = u[v * kN + i];
      } else {
        P::unpack(rx[v], fx);
      }
      if (gamma) load_f32(gamma + k * kN, gm);
#pragma unroll
      for (int i = 0; i < kN; i++) g[i] = gamma ? fd[i] * gm[i] : fd[i];
    };
    float sg = 0.0f, sgx = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++) {
      const int k = v * LANES + lane;
      if (k >= nvec) continue;
      float fd[kN], fx[kN], g[kN];
      terms(v, k, fd, fx, g);
#pragma unroll
      for (int i = 0; i < kN; i++) {
        const float xhat = (fx[i] - mu) * rs;
        sg += g[i];
        sgx += g[i] * xhat;
        if constexpr (SUMS) {  // zero for rows past the end: dy is zero there
          acc_g[v * kN + i] += fd[i] * xhat;
          acc_b[v * kN + i] += fd[i];
        }
      }
    }
    const float2 both = group_sum2<LANES>(sg, sgx);
    const float mean_g = both.x / float(cols), mean_gx = both.y / float(cols);
    // dx = rs (g - mean_g - xhat mean_gx) with xhat = (u - mu) rs, as g rs + u a1 + a0: two fused
    // multiply-adds an element
    const float a1 = -rs * rs * mean_gx, a0 = -(a1 * mu + rs * mean_g);
    if (valid) {
      uint4* dst = reinterpret_cast<uint4*>(dx) + at;
      const uint4* add = addend ? reinterpret_cast<const uint4*>(addend) + at : nullptr;
#pragma unroll
      for (int v = 0; v < NV; v++) {
        const int k = v * LANES + lane;
        if (k >= nvec) continue;
        float fd[kN], fx[kN], g[kN], a[kN];
        terms(v, k, fd, fx, g);
        if (add) P::unpack(add[k], a);
#pragma unroll
        for (int i = 0; i < kN; i++) {
          fd[i] = fmaf(g[i], rs, fmaf(fx[i], a1, a0));
          if constexpr (GELU) fd[i] *= slope[v * kN + i];
          if (add) fd[i] += a[i];
        }
        const uint4 stored = P::pack(fd);
        dst[k] = stored;
        if (!sum_dx && !row_dots) continue;
        P::unpack(stored, fd);
        if (sum_dx) {
#pragma unroll
          for (int i = 0; i < kN; i++) dx_sums[i * kPieces + k] += fd[i];
        }
        if (!GELU && row_dots) {  // whole warps take this branch (LANES >= 32)
          float xv[kN], d = 0.0f;
          P::unpack(rx[v], xv);
#pragma unroll
          for (int i = 0; i < kN; i++) d += fd[i] * xv[i];
          for (int o = (1 << dot_shift) / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
          if ((k & ((1 << dot_shift) - 1)) == 0) row_dots[((row * nvec + k) >> dot_shift)] = d;
        }
      }
    }
  }
  if constexpr (SUMS) {
    if (sum_dx) {
      __syncthreads();
      for (int c = threadIdx.x; c < cols; c += kThreads) {
        const int at = (c % kN) * kPieces + c / kN;
        float t = 0.0f;
        for (int j = 0; j < kGroups; j++) t += buf[j * kWidth + at];
        part_dx[blockIdx.x * int64_t(cols) + c] = t;
      }
    }
    auto write_sums = [&](const float(&acc)[NV * kN], float* __restrict__ out) {
      __syncthreads();  // the previous sums have been read
#pragma unroll
      for (int v = 0; v < NV; v++) {
        const int k = v * LANES + lane;
        if (k >= nvec) continue;
#pragma unroll
        for (int i = 0; i < kN; i++) buf[group * kWidth + k * kN + i] = acc[v * kN + i];
      }
      __syncthreads();
      if (!out) return;
      for (int c = threadIdx.x; c < cols; c += kThreads) {
        float t = 0.0f;
        for (int j = 0; j < kGroups; j++) t += buf[j * kWidth + c];
        out[blockIdx.x * int64_t(cols) + c] = t;
      }
    };
    write_sums(acc_g, part_gamma);
    write_sums(acc_b, part_beta);
  }
}

// Column sums of dy * xhat and dy over a range of rows (gridDim.y ranges), one 16-byte piece of columns a
// thread: a warp reads 512 contiguous bytes of each row. For rows too wide for the column sums in registers.
constexpr int kParamThreads = 128;

template <typename T, bool GELU>
__global__ void __launch_bounds__(kParamThreads)
    layer_norm_param_rows_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ rstd, float* __restrict__ d_gamma, float* __restrict__ d_beta,
                                 int64_t rows, int cols, int64_t chunk) {
  using P = Pack<T>;
  constexpr int kN = P::kN;
  const int nvec = cols / kN;
  const int k = blockIdx.x * kParamThreads + threadIdx.x;
  if (k >= nvec) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  const uint4* pdy = reinterpret_cast<const uint4*>(dy) + k;
  const uint4* px = reinterpret_cast<const uint4*>(x) + k;
  float sg[kN] = {}, sb[kN] = {};
#pragma unroll 4
  for (int64_t r = r0; r < r1; r++) {
    float fd[kN], fx[kN];
    P::unpack(pdy[r * nvec], fd);
    P::unpack(px[r * nvec], fx);
    const float mu = mean[r], rs = rstd[r];
#pragma unroll
    for (int i = 0; i < kN; i++) {
      sg[i] += fd[i] * ((input_value<GELU>(fx[i]) - mu) * rs);
      sb[i] += fd[i];
    }
  }
  const int64_t at = blockIdx.y * int64_t(cols) + int64_t(k) * kN;
#pragma unroll
  for (int i = 0; i < kN; i++) {
    if (d_gamma) d_gamma[at + i] = sg[i];
    if (d_beta) d_beta[at + i] = sb[i];
  }
}

// The float32 column sums a backward writes: d_gamma, d_beta and dx's (a bias gradient); any may be null.
struct ColumnOutputs {
  float* out[3];
};

// Adds `parts` rows of column partials ([3][parts, cols]) into the outputs (blockIdx.y picks one) in a
// fixed order, in float64: a block takes kSumCols columns and its kSumSlices slices of threads every
// kSumSlices-th part, so that each thread has only a few loads to wait for.
constexpr int kSumCols = 8, kSumSlices = kThreads / kSumCols;

__global__ void __launch_bounds__(kThreads)
    layer_norm_sum_partials_kernel(const float* __restrict__ partial, ColumnOutputs outs, int parts, int64_t cols) {
  float* const out = outs.out[blockIdx.y];
  if (!out) return;  // the whole block
  const float* p = partial + blockIdx.y * int64_t(parts) * cols;
  const int lane = threadIdx.x % kSumCols, slice = threadIdx.x / kSumCols;
  const int64_t c = blockIdx.x * int64_t(kSumCols) + lane;
  double t = 0.0;
  if (c < cols) {
#pragma unroll 4
    for (int j = slice; j < parts; j += kSumSlices) t += p[j * cols + c];
  }
  __shared__ double buf[kSumSlices][kSumCols];
  buf[slice][lane] = t;
  __syncthreads();
  if (slice != 0 || c >= cols) return;
  double sum = 0.0;
  for (int j = 0; j < kSumSlices; j++) sum += buf[j][lane];
  out[c] = static_cast<float>(sum);
}

// ---------------------------------------------------------------------------------------------------------
// General kernels, for any width and alignment: each row is handled by GROUP consecutive threads, a warp
// for short rows and the whole block for long ones (row_groups.cuh), reading the row from global memory on
// each pass (and, with GELU, computing gelu(x) on each).

template <int GROUP, bool GELU, typename T>
__global__ void layer_norm_kernel(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                  T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                                  int64_t cols, float eps) {
  const RowSpot r = row_spot<GROUP>(rows);
  const T* p = x + (r.valid ? r.row : 0) * cols;
  float s = 0.0f;
  if (r.valid) for (int64_t j = r.lane; j < cols; j += GROUP) s += input_value<GELU>(ldf(p[j]));
  const float mu = group_sum<GROUP>(s) / float(cols);
  float v = 0.0f;
  if (r.valid) {
    for (int64_t j = r.lane; j < cols; j += GROUP) {
      const float d = input_value<GELU>(ldf(p[j])) - mu;
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
    float t = (input_value<GELU>(ldf(p[j])) - mu) * rs;
    if (gamma) t *= gamma[j];
    if (beta) t += beta[j];
    stf(o[j], t);
  }
}

template <int GROUP, bool GELU, typename T>
__global__ void layer_norm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ gamma,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     const T* __restrict__ addend, T* __restrict__ dx, int64_t rows, int64_t cols) {
  const RowSpot r = row_spot<GROUP>(rows);
  const int64_t base = (r.valid ? r.row : 0) * cols;
  const float mu = r.valid ? mean[r.row] : 0.0f, rs = r.valid ? rstd[r.row] : 0.0f;
  float sg = 0.0f, sgx = 0.0f;
  if (r.valid) {
    for (int64_t j = r.lane; j < cols; j += GROUP) {
      const float xhat = (input_value<GELU>(ldf(x[base + j])) - mu) * rs;
      const float g = gamma ? ldf(dy[base + j]) * gamma[j] : ldf(dy[base + j]);
      sg += g;
      sgx += g * xhat;
    }
  }
  const float2 both = group_sum2<GROUP>(sg, sgx);
  const float mean_g = both.x / float(cols), mean_gx = both.y / float(cols);
  if (!r.valid) return;
  for (int64_t j = r.lane; j < cols; j += GROUP) {
    float u = ldf(x[base + j]), slope = 1.0f;
    if constexpr (GELU) gelu_fast_with_derivative(u, u, slope);
    const float xhat = (u - mu) * rs;
    const float g = gamma ? ldf(dy[base + j]) * gamma[j] : ldf(dy[base + j]);
    float d = rs * (g - mean_g - xhat * mean_gx);
    if constexpr (GELU) d *= slope;
    if (addend) d += ldf(addend[base + j]);
    stf(dx[base + j], d);
  }
}

// Column sums of dy * xhat and dy over a range of rows: one thread per column, gridDim.y row ranges.
template <bool GELU, typename T>
__global__ void layer_norm_param_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, float* __restrict__ d_gamma, float* __restrict__ d_beta,
                                        int64_t rows, int64_t cols, int64_t chunk) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float sg = 0.0f, sb = 0.0f;
  for (int64_t r = r0; r < r1; r++) {
    const float g = ldf(dy[r * cols + j]);
    sg += g * (input_value<GELU>(ldf(x[r * cols + j])) - mean[r]) * rstd[r];
    sb += g;
  }
  if (d_gamma) d_gamma[blockIdx.y * cols + j] = sg;
  if (d_beta) d_beta[blockIdx.y * cols + j] = sb;
}

// ---------------------------------------------------------------------------------------------------------
// Launchers

// Whether rows of `cols` elements go through the register kernels: whole 16-byte pieces, at most kRowBytes,
// and every pointer (null ones aside) 16-byte aligned.
template <typename T>
bool rows_fit_registers(int64_t cols, std::initializer_list<const void*> pointers) {
  if (cols <= 0 || cols % Pack<T>::kN != 0 || cols * int64_t(sizeof(T)) > kRowBytes) return false;
  for (const void* p : pointers) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Calls f.template operator()<LANES, NV>() with the smallest group and pieces per lane that hold `pieces`
// 16-byte pieces (at most kRowBytes / 16).
template <typename F>
void by_row_pieces(int pieces, F&& f) {
  if (pieces <= 4) return f.template operator()<4, 1>();
  if (pieces <= 8) return f.template operator()<8, 1>();
  if (pieces <= 16) return f.template operator()<16, 1>();
  const int per_lane = static_cast<int>(ceil_div(pieces, 32));
  if (per_lane <= 1) return f.template operator()<32, 1>();
  if (per_lane <= 2) return f.template operator()<32, 2>();
  if (per_lane <= 3) return f.template operator()<32, 3>();
  if (per_lane <= 4) return f.template operator()<32, 4>();
  if (per_lane <= 6) return f.template operator()<32, 6>();
  if (per_lane <= 8) return f.template operator()<32, 8>();
  if (per_lane <= 12) return f.template operator()<32, 12>();
  return f.template operator()<32, 16>();
}

// The backward's choice: rows of more than 4 pieces a lane of a warp go to groups of 128 threads (two a
// block), so that each thread's share of the column sums (at most 32 columns) stays in registers beside
// its pieces and the sums need no second read of dy and x.
template <typename F>
void by_row_pieces_backward(int pieces, F&& f) {
  if (pieces <= 32 * 4) return by_row_pieces(pieces, f);
  const int per_lane = static_cast<int>(ceil_div(pieces, 128));
  if (per_lane <= 2) return f.template operator()<128, 2>();
  if (per_lane <= 3) return f.template operator()<128, 3>();
  return f.template operator()<128, 4>();
}

// Runs launch(partials), which writes `parts` rows of column partial sums for each output that is not
// null, and sums them into the outputs; one part is written straight to them.
template <typename Launch>
void column_sums(int64_t parts, int64_t cols, ColumnOutputs outs, cudaStream_t s, Launch&& launch) {
  if (parts == 1) {
    launch(outs);
    return;
  }
  const Scratch scratch(size_t(3 * parts * cols) * sizeof(float));
  ColumnOutputs partials{};
  for (int j = 0; j < 3; j++) partials.out[j] = outs.out[j] ? scratch.as<float>() + j * parts * cols : nullptr;
  launch(partials);
  const dim3 grid(static_cast<unsigned>(ceil_div(cols, kSumCols)), 3);
  layer_norm_sum_partials_kernel<<<grid, kThreads, 0, s>>>(scratch.as<float>(), outs, static_cast<int>(parts), cols);
  check_launch("layerNorm parameter-gradient sum kernel");
}

template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, float> ? DType::F32 : DType::BF16;
}

// Row ranges for column-sum kernels with `col_blocks` blocks a range: enough blocks to fill the device
// `waves` times over, each range at least `min_rows` long.
struct RowRanges {
  int64_t chunk, used;
};

RowRanges row_ranges(int64_t rows, int64_t col_blocks, int waves, int64_t min_rows) {
  const int64_t want = std::max<int64_t>(1, int64_t(device_info().sm_count) * waves / col_blocks);
  const int64_t splits = std::min<int64_t>({want, ceil_div(rows, min_rows), 65535});
  const int64_t chunk = ceil_div(rows, splits);
  return {chunk, ceil_div(rows, chunk)};
}

template <typename K>
int resident_blocks_per_sm(K kernel) {
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0) != cudaSuccess) {
    (void)cudaGetLastError();  // not a launch failure: fall back to one block an SM
    n = 1;
  }
  return std::max(n, 1);
}

// dx's column sums by the reduction kernel, where the backward's kernel does not make them
template <typename T>
void dx_column_sums(const T* dx, float* dx_sums, int64_t rows, int64_t cols, cudaStream_t s) {
  if (dx_sums) launch_reduce_into(ReduceOp::Sum, dtype_of<T>(), dx, DType::F32, dx_sums, {rows, cols}, {0}, s);
}

// Per row and per run of `segment` columns, the dot product of dx with x (RowDots.out, or nothing where null).
struct RowDots {
  float* out;
  int64_t segment;
};

// The dots by their own kernel, where the backward's kernel does not make them
template <typename T>
void row_dots_after(const T* x, const T* dx, RowDots dots, int64_t rows, int64_t cols, cudaStream_t s) {
  if (dots.out) launch_attention_dsum(x, dtype_of<T>(), dx, dtype_of<T>(), dots.out, rows * cols / dots.segment, int(dots.segment), s);
}

template <typename T, int LANES, int NV, bool GELU>
void layer_norm_dx_rows(const T* dy, const T* x, const float* gamma, const float* mean, const float* rstd, const T* addend, T* dx,
                        ColumnOutputs sums, RowDots dots, int64_t rows, int cols, cudaStream_t s) {
  constexpr int kN = Pack<T>::kN, kGroups = kThreads / LANES;
  // column sums of up to 32 columns a lane stay in registers beside the row
  constexpr bool kFused = NV * kN <= 32;
  const int64_t row_blocks = ceil_div(rows, kGroups);
  const bool any_sums = sums.out[0] || sums.out[1] || sums.out[2];
  // the dots in the kernel: whole warps a row, every lane's pieces in the row, runs of a power of two pieces
  const int64_t dot_pieces = dots.segment / kN;
  const bool fused_dots = dots.out && !GELU && LANES >= 32 && cols == LANES * NV * kN && dots.segment % kN == 0 &&
                          dot_pieces <= 32 && (dot_pieces & (dot_pieces - 1)) == 0;
  int dot_shift = 0;
  while ((int64_t(1) << dot_shift) < dot_pieces) dot_shift++;
  float* const kernel_dots = fused_dots ? dots.out : nullptr;
  if (!kFused || !any_sums) {
    layer_norm_dx_rows_kernel<T, LANES, NV, false, GELU><<<static_cast<unsigned>(row_blocks), kThreads, 0, s>>>(
        dy, x, gamma, mean, rstd, addend, dx, nullptr, nullptr, nullptr, kernel_dots, dot_shift, rows, cols);
    check_launch("layerNormBackward kernel");
    dx_column_sums(dx, sums.out[2], rows, cols, s);
    if (!fused_dots) row_dots_after(x, dx, dots, rows, cols, s);
    if (!sums.out[0] && !sums.out[1]) return;
    const int64_t col_blocks = ceil_div(cols / kN, kParamThreads);
    const RowRanges rr = row_ranges(rows, col_blocks, 8, 16);
    column_sums(rr.used, cols, {sums.out[0], sums.out[1], nullptr}, s, [&](ColumnOutputs p) {
      const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(rr.used));
      layer_norm_param_rows_kernel<T, GELU><<<grid, kParamThreads, 0, s>>>(dy, x, mean, rstd, p.out[0], p.out[1], rows, cols, rr.chunk);
      check_launch("layerNorm parameter-gradient kernel");
    });
    return;
  }
  if constexpr (kFused) {
    const auto kernel = layer_norm_dx_rows_kernel<T, LANES, NV, true, GELU>;
    static const int per_sm = resident_blocks_per_sm(kernel);
    const int64_t blocks = std::min<int64_t>(row_blocks, int64_t(device_info().sm_count) * per_sm);
    column_sums(blocks, cols, sums, s, [&](ColumnOutputs p) {
      kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(dy, x, gamma, mean, rstd, addend, dx, p.out[0], p.out[1], p.out[2],
                                                                kernel_dots, dot_shift, rows, cols);
      check_launch("layerNormBackward kernel");
    });
    if (!fused_dots) row_dots_after(x, dx, dots, rows, cols, s);
  }
}

template <typename T, bool GELU>
void layer_norm_backward_general(const T* dy, const T* x, const float* gamma, const float* mean, const float* rstd, const T* addend,
                                 T* dx, ColumnOutputs sums, RowDots dots, int64_t rows, int64_t cols, cudaStream_t s) {
  by_row_length(rows, cols, [&]<int G>(unsigned blocks) {
    layer_norm_dx_kernel<G, GELU, T><<<blocks, kThreads, 0, s>>>(dy, x, gamma, mean, rstd, addend, dx, rows, cols);
  });
  check_launch("layerNormBackward kernel");
  dx_column_sums(dx, sums.out[2], rows, cols, s);
  row_dots_after(x, dx, dots, rows, cols, s);
  if (!sums.out[0] && !sums.out[1]) return;
  const int64_t col_blocks = ceil_div(cols, kThreads);
  const RowRanges rr = row_ranges(rows, col_blocks, 4, 32);
  column_sums(rr.used, cols, {sums.out[0], sums.out[1], nullptr}, s, [&](ColumnOutputs p) {
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(rr.used));
    layer_norm_param_kernel<GELU, T><<<grid, kThreads, 0, s>>>(dy, x, mean, rstd, p.out[0], p.out[1], rows, cols, rr.chunk);
    check_launch("layerNorm parameter-gradient kernel");
  });
}

}  // namespace

void launch_layer_norm(DType t, const void* x, const float* gamma, const float* beta, void* y, float* mean, float* rstd, int64_t rows,
                       int64_t cols, float eps, bool gelu_input, cudaStream_t s) {
  if (rows == 0) return;
  float_typed(t, "layerNorm", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    dispatch_flag(gelu_input, [&]<bool GELU>() {
      if (rows_fit_registers<T>(cols, {x, y, gamma, beta})) {
        auto launch = [&]<int LANES, int NV>() {
          const auto blocks = static_cast<unsigned>(ceil_div(rows, kThreads / LANES));
          layer_norm_rows_kernel<T, LANES, NV, GELU><<<blocks, kThreads, 0, s>>>(xt, gamma, beta, yt, mean, rstd, rows,
                                                                                static_cast<int>(cols), eps);
        };
        // gelu(x) is held in float registers: wide rows take the backward's groups of 128 threads
        if constexpr (GELU) by_row_pieces_backward(static_cast<int>(cols / Pack<T>::kN), launch);
        else by_row_pieces(static_cast<int>(cols / Pack<T>::kN), launch);
      } else {
        by_row_length(rows, cols, [&]<int G>(unsigned blocks) {
          layer_norm_kernel<G, GELU, T><<<blocks, kThreads, 0, s>>>(xt, gamma, beta, yt, mean, rstd, rows, cols, eps);
        });
      }
    });
  });
  check_launch("layerNorm kernel");
}

void launch_layer_norm_backward(DType t, const void* dy, const void* x, const float* gamma, const float* mean, const float* rstd,
                                const void* addend, void* dx, float* d_gamma, float* d_beta, float* dx_sums, float* row_dots,
                                int64_t segment, int64_t rows, int64_t cols, bool gelu_input, cudaStream_t s) {
  if (cols == 0) return;
  if (rows == 0) {
    if (dx_sums) launch_fill(dx_sums, DType::F32, 0.0, cols, s);
    return;
  }
  const ColumnOutputs sums{{d_gamma, d_beta, dx_sums}};
  const RowDots dots{row_dots, segment};
  float_typed(t, "layerNormBackward", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    const T* dyt = static_cast<const T*>(dy);
    const T* xt = static_cast<const T*>(x);
    const T* at = static_cast<const T*>(addend);
    T* dxt = static_cast<T*>(dx);
    dispatch_flag(gelu_input, [&]<bool GELU>() {
      if (rows_fit_registers<T>(cols, {dy, x, dx, gamma, addend})) {
        by_row_pieces_backward(static_cast<int>(cols / Pack<T>::kN), [&]<int LANES, int NV>() {
          layer_norm_dx_rows<T, LANES, NV, GELU>(dyt, xt, gamma, mean, rstd, at, dxt, sums, dots, rows, static_cast<int>(cols), s);
        });
      } else {
        layer_norm_backward_general<T, GELU>(dyt, xt, gamma, mean, rstd, at, dxt, sums, dots, rows, cols, s);
      }
    });
  });
}

}  // namespace ln
