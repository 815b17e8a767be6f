// Packed attention kernels. A block of 4 warps takes a tile of 16 rows of one group (4 rows a warp); the
// other side streams through shared memory in tiles of 32 rows, one row per lane, so that a lane computes
// one score per row of its warp and the warp reduces softmax statistics with shuffles. Scores live in
// base 2 (scale * log2 e). Backward is FlashAttention-2's with the caller's final L and Dsum, in two
// kernels (dQ over query tiles, dK and dV over key tiles) so that no atomics are needed.
#include "attention_gathered.h"

#include <cmath>

#include "../common.h"
#include "../device.h"
#include "launch_util.cuh"

namespace ln {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kTileRows = kWarps * kRowsPerWarp;  // 16 rows a block
constexpr int kStream = 32;                         // streamed rows a step, one a lane
constexpr int kBlockThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct GroupShape {
  int64_t qa, ka;  // first query and key row of the group
  int64_t q0;      // first query row that sees a key
  int m, mk, full;
};

__device__ __forceinline__ GroupShape group_shape(const int32_t* qo, const int32_t* ko, int g, bool causal) {
  GroupShape s;
  s.qa = qo[g];
  s.ka = ko[g];
  const int mq = qo[g + 1] - qo[g];
  s.mk = ko[g + 1] - ko[g];
  int skip = 0;
  if (s.mk == 0) skip = mq;
  else if (causal) skip = mq > s.mk ? mq - s.mk : 0;
  s.m = mq - skip;
  s.full = causal ? s.mk - s.m : s.mk;
  s.q0 = s.qa + skip;
  return s;
}

// rows [first, first + count) of src ([*, dim]) into dst [n][DM + 1], zero beyond count and dim
template <int DM>
__device__ __forceinline__ void load_tile(float* __restrict__ dst, const float* __restrict__ src, int64_t first, int count, int n,
                                          int dim) {
  for (int idx = threadIdx.x; idx < n * DM; idx += kBlockThreads) {
    const int r = idx / DM, d = idx % DM;
    float x = 0.0f;
    if (r < count && d < dim) x = src[(first + r) * dim + d];
    dst[r * (DM + 1) + d] = x;
  }
}

// acc[r][:] += w_jj(r) * tile[jj][:] over the kStream rows of a shared tile, where w_jj(r) is lane jj's
// weight for row r: P V in the forward pass, dS K for dQ
template <int R, int C, int LD>
__device__ __forceinline__ void accumulate_streamed(float (&acc)[R][C], const float (&w)[R], const float* __restrict__ tile,
                                                    int lane) {
#pragma unroll 4
  for (int jj = 0; jj < kStream; jj++) {
    float row[C];
#pragma unroll
    for (int c = 0; c < C; c++) row[c] = tile[jj * LD + lane + 32 * c];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float wj = __shfl_sync(0xffffffffu, w[r], jj);
#pragma unroll
      for (int c = 0; c < C; c++) acc[r][c] = fmaf(wj, row[c], acc[r][c]);
    }
  }
}

// the last key (exclusive) that active query i of the group sees
__device__ __forceinline__ int key_end(const GroupShape& s, int i, bool causal) {
  return causal ? s.full + i + 1 : s.mk;
}

template <int DM>
__global__ void __launch_bounds__(kBlockThreads) gathered_forward_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                                   const float* __restrict__ v, float* __restrict__ o,
                                                                   float* __restrict__ lse, GatheredArgs a) {
  constexpr int LD = DM + 1, C = DM / 32, R = kRowsPerWarp;
  extern __shared__ float smem[];
  float* qs = smem;
  float* ks = qs + kTileRows * LD;
  float* vs = ks + kStream * LD;
  const int g = a.tiles[2 * blockIdx.x], i0 = a.tiles[2 * blockIdx.x + 1];
  const GroupShape s = group_shape(a.q_offsets, a.k_offsets, g, a.causal);
  const int rows = min(kTileRows, s.m - i0);
  if (rows <= 0) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int dim = a.head_dim;
  const float sl2 = a.scale * kLog2e;
  load_tile<DM>(qs, q, s.q0 + i0, rows, kTileRows, dim);

  float mx[R], l[R], acc[R][C];
#pragma unroll
  for (int r = 0; r < R; r++) {
    mx[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; c++) acc[r][c] = 0.0f;
  }
  const int end = a.causal ? min(s.mk, s.full + i0 + kTileRows) : s.mk;
  for (int j0 = 0; j0 < end; j0 += kStream) {
    __syncthreads();
    load_tile<DM>(ks, k, s.ka + j0, min(kStream, s.mk - j0), kStream, dim);
    load_tile<DM>(vs, v, s.ka + j0, min(kStream, s.mk - j0), kStream, dim);
    __syncthreads();
    float sc[R];
#pragma unroll
    for (int r = 0; r < R; r++) sc[r] = 0.0f;
#pragma unroll 8
    for (int d = 0; d < DM; d++) {
      const float kd = ks[lane * LD + d];
#pragma unroll
      for (int r = 0; r < R; r++) sc[r] = fmaf(qs[(warp * R + r) * LD + d], kd, sc[r]);
    }
    const int j = j0 + lane;
    float p[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int i = i0 + warp * R + r;
      const bool keep = i < s.m && j < min(s.mk, key_end(s, i, a.causal));
      const float x = keep ? sc[r] * sl2 : -INFINITY;
      const float m_new = fmaxf(mx[r], warp_reduce(x, MaxOp{}));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(mx[r] - m_use);
      p[r] = exp2f(x - m_use);
      l[r] = l[r] * alpha + warp_reduce(p[r], SumOp{});
      mx[r] = m_new;
#pragma unroll
      for (int c = 0; c < C; c++) acc[r][c] *= alpha;
    }
    accumulate_streamed<R, C, LD>(acc, p, vs, lane);
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int i = i0 + warp * R + r;
    if (i >= s.m) continue;
    const int64_t row = s.q0 + i;
    const float inv = 1.0f / l[r];
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int d = lane + 32 * c;
      if (d < dim) o[row * dim + d] = acc[r][c] * inv;
    }
    if (lane == 0) lse[row] = (mx[r] + log2f(l[r])) * kLn2;
  }
}

// dQ over query tiles: dS = P (dO v^T - Dsum), dQ = scale dS K.
template <int DM>
__global__ void __launch_bounds__(kBlockThreads) gathered_dq_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                              const float* __restrict__ v, const float* __restrict__ lse,
                                                              const float* __restrict__ dsum, const float* __restrict__ d_o,
                                                              float* __restrict__ dq, GatheredArgs a) {
  constexpr int LD = DM + 1, C = DM / 32, R = kRowsPerWarp;
  extern __shared__ float smem[];
  float* qs = smem;
  float* dos = qs + kTileRows * LD;
  float* ks = dos + kTileRows * LD;
  float* vs = ks + kStream * LD;
  const int g = a.tiles[2 * blockIdx.x], i0 = a.tiles[2 * blockIdx.x + 1];
  const GroupShape s = group_shape(a.q_offsets, a.k_offsets, g, a.causal);
  const int rows = min(kTileRows, s.m - i0);
  if (rows <= 0) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int dim = a.head_dim;
  const float sl2 = a.scale * kLog2e;
  load_tile<DM>(qs, q, s.q0 + i0, rows, kTileRows, dim);
  load_tile<DM>(dos, d_o, s.q0 + i0, rows, kTileRows, dim);
  float L[R], Ds[R], acc[R][C];
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int i = i0 + warp * R + r;
    L[r] = i < s.m ? lse[s.q0 + i] * kLog2e : -INFINITY;
    Ds[r] = i < s.m ? dsum[s.q0 + i] : 0.0f;
#pragma unroll
    for (int c = 0; c < C; c++) acc[r][c] = 0.0f;
  }
  const int end = a.causal ? min(s.mk, s.full + i0 + kTileRows) : s.mk;
  for (int j0 = 0; j0 < end; j0 += kStream) {
    __syncthreads();
    load_tile<DM>(ks, k, s.ka + j0, min(kStream, s.mk - j0), kStream, dim);
    load_tile<DM>(vs, v, s.ka + j0, min(kStream, s.mk - j0), kStream, dim);
    __syncthreads();
    float sc[R], dp[R];
#pragma unroll
    for (int r = 0; r < R; r++) sc[r] = dp[r] = 0.0f;
#pragma unroll 8
    for (int d = 0; d < DM; d++) {
      const float kd = ks[lane * LD + d], vd = vs[lane * LD + d];
#pragma unroll
      for (int r = 0; r < R; r++) {
        sc[r] = fmaf(qs[(warp * R + r) * LD + d], kd, sc[r]);
        dp[r] = fmaf(dos[(warp * R + r) * LD + d], vd, dp[r]);
      }
    }
    const int j = j0 + lane;
    float ds[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int i = i0 + warp * R + r;
      const bool keep = i < s.m && L[r] != -INFINITY && j < min(s.mk, key_end(s, i, a.causal));
      const float p = keep ? exp2f(sc[r] * sl2 - L[r]) : 0.0f;
      ds[r] = p * (dp[r] - Ds[r]);
    }
    accumulate_streamed<R, C, LD>(acc, ds, ks, lane);
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int i = i0 + warp * R + r;
    if (i >= s.m) continue;
    const int64_t row = s.q0 + i;
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int d = lane + 32 * c;
      if (d < dim) dq[row * dim + d] = acc[r][c] * a.scale;
    }
  }
}

// dK and dV over key tiles: dV = P^T dO, dK = scale dS^T Q; queries stream one a lane.
template <int DM>
__global__ void __launch_bounds__(kBlockThreads) gathered_dkv_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                               const float* __restrict__ v, const float* __restrict__ lse,
                                                               const float* __restrict__ dsum, const float* __restrict__ d_o,
                                                               float* __restrict__ dk, float* __restrict__ dv, GatheredArgs a,
                                                               const int32_t* __restrict__ k_tiles) {
  constexpr int LD = DM + 1, C = DM / 32, R = kRowsPerWarp;
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = ks + kTileRows * LD;
  float* qs = vs + kTileRows * LD;
  float* dos = qs + kStream * LD;
  float* ls = dos + kStream * LD;
  float* dss = ls + kStream;
  const int g = k_tiles[2 * blockIdx.x], j0 = k_tiles[2 * blockIdx.x + 1];
  const GroupShape s = group_shape(a.q_offsets, a.k_offsets, g, a.causal);
  const int keys = min(kTileRows, s.mk - j0);
  if (keys <= 0 || s.m == 0) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int dim = a.head_dim;
  const float sl2 = a.scale * kLog2e;
  load_tile<DM>(ks, k, s.ka + j0, keys, kTileRows, dim);
  load_tile<DM>(vs, v, s.ka + j0, keys, kTileRows, dim);
  float dka[R][C], dva[R][C];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int c = 0; c < C; c++) dka[r][c] = dva[r][c] = 0.0f;
  // query i sees key j when j < full + i + 1 (causal): the first query of interest is j0 - full
  const int start = a.causal ? max(0, j0 - s.full) : 0;
  for (int i0 = start; i0 < s.m; i0 += kStream) {
    const int count = min(kStream, s.m - i0);
    __syncthreads();
    load_tile<DM>(qs, q, s.q0 + i0, count, kStream, dim);
    load_tile<DM>(dos, d_o, s.q0 + i0, count, kStream, dim);
    for (int t = threadIdx.x; t < kStream; t += kBlockThreads) {
      ls[t] = t < count ? lse[s.q0 + i0 + t] * kLog2e : -INFINITY;
      dss[t] = t < count ? dsum[s.q0 + i0 + t] : 0.0f;
    }
    __syncthreads();
    float sc[R], dp[R];
#pragma unroll
    for (int r = 0; r < R; r++) sc[r] = dp[r] = 0.0f;
#pragma unroll 8
    for (int d = 0; d < DM; d++) {
      const float qd = qs[lane * LD + d], dod = dos[lane * LD + d];
#pragma unroll
      for (int r = 0; r < R; r++) {
        sc[r] = fmaf(ks[(warp * R + r) * LD + d], qd, sc[r]);
        dp[r] = fmaf(vs[(warp * R + r) * LD + d], dod, dp[r]);
      }
    }
    const int i = i0 + lane;
    const float Li = ls[lane], Di = dss[lane];
    float p[R], ds[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int j = j0 + warp * R + r;
      const bool keep = i < s.m && j < s.mk && Li != -INFINITY && j < key_end(s, i, a.causal);
      p[r] = keep ? exp2f(sc[r] * sl2 - Li) : 0.0f;
      ds[r] = p[r] * (dp[r] - Di);
    }
#pragma unroll 4
    for (int ii = 0; ii < kStream; ii++) {
      float qv[C], dv_[C];
#pragma unroll
      for (int c = 0; c < C; c++) {
        qv[c] = qs[ii * LD + lane + 32 * c];
        dv_[c] = dos[ii * LD + lane + 32 * c];
      }
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float pw = __shfl_sync(0xffffffffu, p[r], ii), dw = __shfl_sync(0xffffffffu, ds[r], ii);
#pragma unroll
        for (int c = 0; c < C; c++) {
          dva[r][c] = fmaf(pw, dv_[c], dva[r][c]);
          dka[r][c] = fmaf(dw, qv[c], dka[r][c]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int j = j0 + warp * R + r;
    if (j >= s.mk) continue;
    const int64_t row = s.ka + j;
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int d = lane + 32 * c;
      if (d < dim) {
        dk[row * dim + d] = dka[r][c] * a.scale;
        dv[row * dim + d] = dva[r][c];
      }
    }
  }
}

__global__ void merge_attention_kernel(float* __restrict__ acc_o, float* __restrict__ acc_lse, const float* __restrict__ o,
                                       const float* __restrict__ lse, const int32_t* __restrict__ rows, int64_t count, int64_t total, int dim) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  if (i >= count) return;
  const int lane = threadIdx.x % 32;
  const int64_t row = rows[i];
  if (row < 0 || row >= total) return;  // the caller checks the rows; never write out of bounds
  const float lp = lse[i];
  if (lp == -INFINITY) return;
  const float la = acc_lse[row];
  float* dst = acc_o + row * dim;
  const float* src = o + i * dim;
  float next = lp;
  if (la == -INFINITY) {
    for (int d = lane; d < dim; d += 32) dst[d] = src[d];
  } else {
    const float mx = fmaxf(la, lp);
    const float ea = expf(la - mx), ep = expf(lp - mx);
    const float sum = ea + ep;
    const float wa = ea / sum, wp = ep / sum;
    for (int d = lane; d < dim; d += 32) dst[d] = wa * dst[d] + wp * src[d];
    next = mx + logf(sum);
  }
  __syncwarp();  // every lane has read acc_lse[row]
  if (lane == 0) acc_lse[row] = next;
}


template <typename F>
void dispatch_dim(int dim, F&& f) {
  if (dim <= 32) return f.template operator()<32>();
  if (dim <= 64) return f.template operator()<64>();
  if (dim <= 128) return f.template operator()<128>();
  if (dim <= 256) return f.template operator()<256>();
  throw RangeError("gathered attention on CUDA supports headDim up to 256, got " + std::to_string(dim));
}

unsigned grid_of(int64_t tiles, const char* what) {
  if (tiles > INT32_MAX) fail(std::string(what) + ": too many tiles");
  return static_cast<unsigned>(tiles);
}

}  // namespace

void launch_gathered_forward(const float* q, const float* k, const float* v, float* o, float* lse, const GatheredArgs& a,
                             cudaStream_t s) {
  if (a.tile_count == 0) return;
  dispatch_dim(a.head_dim, [&]<int DM>() {
    const size_t smem = sizeof(float) * (kTileRows + 2 * kStream) * (DM + 1);
    auto kernel = gathered_forward_kernel<DM>;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "gathered attention forward");
    kernel<<<grid_of(a.tile_count, "gathered attention forward"), kBlockThreads, smem, s>>>(q, k, v, o, lse, a);
    check_launch("gathered attention forward kernel");
  });
}

void launch_gathered_backward(const float* q, const float* k, const float* v, const float* lse, const float* dsum, const float* d_o,
                              float* dq, float* dk, float* dv, const GatheredArgs& a, const int32_t* k_tiles,
                              int64_t k_tile_count, cudaStream_t s) {
  dispatch_dim(a.head_dim, [&]<int DM>() {
    if (a.tile_count > 0) {
      const size_t smem = sizeof(float) * (2 * kTileRows + 2 * kStream) * (DM + 1);
      auto kernel = gathered_dq_kernel<DM>;
      allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "gathered attention dq");
      kernel<<<grid_of(a.tile_count, "gathered attention dq"), kBlockThreads, smem, s>>>(q, k, v, lse, dsum, d_o, dq, a);
      check_launch("gathered attention dq kernel");
    }
    if (k_tile_count > 0) {
      const size_t smem = sizeof(float) * ((2 * kTileRows + 2 * kStream) * (DM + 1) + 2 * kStream);
      auto kernel = gathered_dkv_kernel<DM>;
      allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "gathered attention dk dv");
      kernel<<<grid_of(k_tile_count, "gathered attention dk dv"), kBlockThreads, smem, s>>>(q, k, v, lse, dsum, d_o, dk, dv, a, k_tiles);
      check_launch("gathered attention dk dv kernel");
    }
  });
}

void launch_merge_attention(float* acc_o, float* acc_lse, const float* o, const float* lse, const int32_t* rows, int64_t count,
                            int64_t total_rows, int head_dim, cudaStream_t s) {
  if (count == 0) return;
  constexpr int kRowsPerBlock = 8;
  const int64_t blocks = (count + kRowsPerBlock - 1) / kRowsPerBlock;
  merge_attention_kernel<<<grid_of(blocks, "merge attention"), kRowsPerBlock * 32, 0, s>>>(acc_o, acc_lse, o, lse, rows, count, total_rows, head_dim);
  check_launch("merge attention kernel");
}

}  // namespace ln
