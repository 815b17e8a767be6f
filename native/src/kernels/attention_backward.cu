// Backward: the mixture of patterns is one softmax over a multiset of keys, so each pattern is an
// ordinary FlashAttention-2 backward on its strided tiles with the final L and Dsum = rowsum(dO * O):
//   P = exp(S - L), dV += P^T dO, dS = P (dP - Dsum), dQ += dS K scale, dK += dS^T Q scale.
// Two kernels per pattern keep it deterministic without atomics: one over key tiles (dK, dV) and one
// over query tiles (dQ), which recomputes S and dP. Patterns run in sequence and add into dq, dk, dv.
#include "attention.h"

#include "../device.h"
#include "../memory.h"
#include "attention_common.cuh"
#include "launch_util.cuh"

namespace ln {

namespace {

template <int DM, int BM>
constexpr size_t backward_smem() {
  return sizeof(float) * (4 * BM * (DM + 1) + BM * (BM + 1) + 2 * BM);
}

// Dsum[row] = sum_d dO[row, d] * O[row, d], one warp per row.
__global__ void attention_dsum_kernel(const float* __restrict__ o, const float* __restrict__ d_o, float* __restrict__ dsum,
                                      int64_t rows, int dim) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  float acc = 0.0f;
  for (int d = lane; d < dim; d += 32) acc = fmaf(o[row * dim + d], d_o[row * dim + d], acc);
  acc = warp_reduce(acc, SumOp{});
  if (lane == 0) dsum[row] = acc;
}

// S[i][j] = sum_d A[row_i][d] B[col_j][d] and T[i][j] = sum_d C[row_i][d] E[col_j][d] for the thread's R x R cells
// (rows ty*R + i, columns tx + 16 j) of two BM x BM products that share the loop.
template <int DM, int R>
__device__ __forceinline__ void two_products(const float* a, const float* b, const float* c, const float* e, float (&s)[R][R],
                                             float (&t)[R][R], int ty, int tx) {
  constexpr int LD = DM + 1;
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int j = 0; j < R; j++) s[i][j] = t[i][j] = 0.0f;
#pragma unroll 4
  for (int d = 0; d < DM; d++) {
    float ra[R], rb[R], rc[R], re[R];
#pragma unroll
    for (int i = 0; i < R; i++) {
      ra[i] = a[(ty * R + i) * LD + d];
      rc[i] = c[(ty * R + i) * LD + d];
    }
#pragma unroll
    for (int j = 0; j < R; j++) {
      rb[j] = b[(tx + 16 * j) * LD + d];
      re[j] = e[(tx + 16 * j) * LD + d];
    }
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
      for (int j = 0; j < R; j++) {
        s[i][j] = fmaf(ra[i], rb[j], s[i][j]);
        t[i][j] = fmaf(rc[i], re[j], t[i][j]);
      }
  }
}

// acc[i][dc] += sum_c w[row_i][c] * x[c][tx + 16 dc]: the thread's rows of a (BM x BM) (BM x DM) product.
template <int DM, int BM, int R, int DC>
__device__ __forceinline__ void accumulate(float (&acc)[R][DC], const float* w, const float* x, int ty, int tx) {
  constexpr int LD = DM + 1;
  constexpr int PD = BM + 1;
#pragma unroll 4
  for (int c = 0; c < BM; c++) {
    float xv[DC];
#pragma unroll
    for (int dc = 0; dc < DC; dc++) xv[dc] = x[c * LD + tx + 16 * dc];
#pragma unroll
    for (int i = 0; i < R; i++) {
      const float wv = w[(ty * R + i) * PD + c];
#pragma unroll
      for (int dc = 0; dc < DC; dc++) acc[i][dc] = fmaf(wv, xv[dc], acc[i][dc]);
    }
  }
}

// Rows of the thread's tile, scaled, added into a [B, N, H, D] gradient (each row has one owner per launch).
template <int BM, int R, int DC>
__device__ __forceinline__ void add_rows(float* __restrict__ grad, const float (&acc)[R][DC], const Problem& p, int64_t t0,
                                         int dim, float mul, int ty, int tx) {
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int64_t t = t0 + ty * R + i;
    if (t >= p.n_sel) continue;
    float* row = grad + (p.row0 + t * p.rstride) * dim;
#pragma unroll
    for (int dc = 0; dc < DC; dc++) {
      const int d = tx + 16 * dc;
      if (d < dim) row[d] += acc[i][dc] * mul;
    }
  }
}

// dK and dV of one key tile: loops over the query tiles that see it.
template <int DM, int BM>
__global__ void __launch_bounds__(kAttnThreads) attention_dkdv_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                                      const float* __restrict__ v, const float* __restrict__ d_o,
                                                                      const float* __restrict__ lse, const float* __restrict__ dsum,
                                                                      float* __restrict__ dk, float* __restrict__ dv, PatternGeom g,
                                                                      float scale) {
  constexpr int R = BM / 16, DC = DM / 16, LD = DM + 1, PD = BM + 1;
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = ks + BM * LD;
  float* qs = vs + BM * LD;
  float* dos = qs + BM * LD;
  float* ws = dos + BM * LD;  // P^T, then dS^T
  float* ls = ws + BM * PD;   // L * log2(e) of the query tile
  float* ds = ls + BM;        // Dsum of the query tile

  const Problem p = locate(g, blockIdx.x, false);
  const int64_t k0 = int64_t(p.tile) * BM;
  if (k0 >= p.n_sel) return;
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  load_rows<DM, BM>(ks, k, p, g.dim, k0);
  load_rows<DM, BM>(vs, v, p, g.dim, k0);

  float gk[R][DC], gv[R][DC];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int c = 0; c < DC; c++) gk[i][c] = gv[i][c] = 0.0f;

  // causal: query tiles before the key tile see none of it (tiles of queries and keys have the same size)
  for (int64_t q0 = g.causal ? k0 : 0; q0 < p.n_sel; q0 += BM) {
    __syncthreads();
    load_rows<DM, BM>(qs, q, p, g.dim, q0);
    load_rows<DM, BM>(dos, d_o, p, g.dim, q0);
    load_row_values<BM>(ls, lse, p, q0, kLog2e, 0.0f);
    load_row_values<BM>(ds, dsum, p, q0, 1.0f, 0.0f);
    __syncthreads();

    float st[R][R], dpt[R][R];  // S^T and dP^T: rows are keys, columns queries
    two_products<DM, R>(ks, qs, vs, dos, st, dpt, ty, tx);
#pragma unroll
    for (int i = 0; i < R; i++) {
      const int64_t tk = k0 + ty * R + i;
#pragma unroll
      for (int j = 0; j < R; j++) {
        const int col = tx + 16 * j;
        const int64_t tq = q0 + col;
        const bool keep = tq < p.n_sel && tk < p.n_sel && (!g.causal || tk <= tq);
        const float pt = keep ? exp2f(st[i][j] * g.scale_log2 - ls[col]) : 0.0f;
        ws[(ty * R + i) * PD + col] = pt;
        dpt[i][j] = pt * (dpt[i][j] - ds[col]);  // now dS^T
      }
    }
    __syncthreads();
    accumulate<DM, BM>(gv, ws, dos, ty, tx);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
      for (int j = 0; j < R; j++) ws[(ty * R + i) * PD + tx + 16 * j] = dpt[i][j];
    __syncthreads();
    accumulate<DM, BM>(gk, ws, qs, ty, tx);
  }
  add_rows<BM>(dk, gk, p, k0, g.dim, scale, ty, tx);
  add_rows<BM>(dv, gv, p, k0, g.dim, 1.0f, ty, tx);
}

// dQ of one query tile: loops over the key tiles it sees.
template <int DM, int BM>
__global__ void __launch_bounds__(kAttnThreads) attention_dq_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                                    const float* __restrict__ v, const float* __restrict__ d_o,
                                                                    const float* __restrict__ lse, const float* __restrict__ dsum,
                                                                    float* __restrict__ dq, PatternGeom g, float scale) {
  constexpr int R = BM / 16, DC = DM / 16, LD = DM + 1, PD = BM + 1;
  extern __shared__ float smem[];
  float* qs = smem;
  float* dos = qs + BM * LD;
  float* ks = dos + BM * LD;
  float* vs = ks + BM * LD;
  float* ws = vs + BM * LD;  // dS
  float* ls = ws + BM * PD;
  float* ds = ls + BM;

  const Problem p = locate(g, blockIdx.x, true);
  const int64_t q0 = int64_t(p.tile) * BM;
  if (q0 >= p.n_sel) return;
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  load_rows<DM, BM>(qs, q, p, g.dim, q0);
  load_rows<DM, BM>(dos, d_o, p, g.dim, q0);
  load_row_values<BM>(ls, lse, p, q0, kLog2e, 0.0f);
  load_row_values<BM>(ds, dsum, p, q0, 1.0f, 0.0f);

  float gq[R][DC];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int c = 0; c < DC; c++) gq[i][c] = 0.0f;

  const int64_t kv_end = g.causal ? min(p.n_sel, q0 + BM) : p.n_sel;
  for (int64_t k0 = 0; k0 < kv_end; k0 += BM) {
    __syncthreads();
    load_rows<DM, BM>(ks, k, p, g.dim, k0);
    load_rows<DM, BM>(vs, v, p, g.dim, k0);
    __syncthreads();

    float s[R][R], dp[R][R];
    two_products<DM, R>(qs, ks, dos, vs, s, dp, ty, tx);
#pragma unroll
    for (int i = 0; i < R; i++) {
      const int row = ty * R + i;
      const int64_t tq = q0 + row;
#pragma unroll
      for (int j = 0; j < R; j++) {
        const int64_t tk = k0 + tx + 16 * j;
        const bool keep = tq < p.n_sel && tk < p.n_sel && (!g.causal || tk <= tq);
        const float pr = keep ? exp2f(s[i][j] * g.scale_log2 - ls[row]) : 0.0f;
        ws[row * PD + tx + 16 * j] = pr * (dp[i][j] - ds[row]);
      }
    }
    __syncthreads();
    accumulate<DM, BM>(gq, ws, ks, ty, tx);
  }
  add_rows<BM>(dq, gq, p, q0, g.dim, scale, ty, tx);
}

}  // namespace

void launch_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse, const float* d_o,
                               float* dq, float* dk, float* dv, const AttentionShape& sh, const AttentionOptions& opt,
                               cudaStream_t s) {
  const int64_t rows = sh.batch * sh.seq * sh.heads;
  if (rows == 0) return;
  const size_t bytes = size_t(rows) * sh.head_dim * sizeof(float);
  check_cuda(cudaMemsetAsync(dq, 0, bytes, s), "cudaMemsetAsync");
  check_cuda(cudaMemsetAsync(dk, 0, bytes, s), "cudaMemsetAsync");
  check_cuda(cudaMemsetAsync(dv, 0, bytes, s), "cudaMemsetAsync");
  const Scratch scratch(size_t(rows) * sizeof(float));  // stream-ordered: freed once the kernels are queued
  float* dsum = scratch.as<float>();
  attention_dsum_kernel<<<static_cast<unsigned>(ceil_div(rows, kThreads / 32)), kThreads, 0, s>>>(o, d_o, dsum, rows, sh.head_dim);
  check_launch("dilated attention Dsum kernel");
  dispatch_head_dim(sh.head_dim, [&]<int DM, int BM>() {
    constexpr size_t smem = backward_smem<DM, BM>();
    auto dkdv = attention_dkdv_kernel<DM, BM>;
    auto dqk = attention_dq_kernel<DM, BM>;
    allow_dynamic_smem(reinterpret_cast<const void*>(dkdv), smem, "dilated attention backward");
    allow_dynamic_smem(reinterpret_cast<const void*>(dqk), smem, "dilated attention backward");
    for (const auto& pat : opt.patterns) {
      const PatternGeom g = make_geom(sh, pat, opt, BM);
      const int64_t blocks = g.group * g.tiles;
      if (blocks > INT32_MAX) fail("dilated attention backward: too many blocks");
      dkdv<<<static_cast<unsigned>(blocks), kAttnThreads, smem, s>>>(q, k, v, d_o, lse, dsum, dk, dv, g, opt.scale);
      check_launch("dilated attention dK/dV kernel");
      dqk<<<static_cast<unsigned>(blocks), kAttnThreads, smem, s>>>(q, k, v, d_o, lse, dsum, dq, g, opt.scale);
      check_launch("dilated attention dQ kernel");
    }
  });
}

}  // namespace ln
