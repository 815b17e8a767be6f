// Forward: one launch per pattern; each block runs an online softmax over its query tile and the
// selected keys of its segment, then merges its rows into O and L through the running log-sum-exp:
//   L' = logaddexp(L, lse_i),  O' = O * exp(L - L') + O_i * exp(lse_i - L').
// Patterns run one after another on the stream, and within a launch every row belongs to one block, so
// the read-modify-write of O and L needs no atomics and the result is deterministic.
#include "attention.h"

#include "../device.h"
#include "attention_common.cuh"
#include "elementwise.h"

namespace ln {

namespace {

template <int DM, int BM>
constexpr size_t forward_smem() {
  return sizeof(float) * (3 * BM * (DM + 1) + BM * (BM + 1));
}

template <int DM, int BM>
__global__ void __launch_bounds__(kAttnThreads) attention_forward_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                                         const float* __restrict__ v, float* __restrict__ o,
                                                                         float* __restrict__ lse, PatternGeom g) {
  constexpr int R = BM / 16;   // score rows and columns per thread
  constexpr int DC = DM / 16;  // output columns per thread
  constexpr int LD = DM + 1;   // padded rows: column reads hit distinct banks
  constexpr int PD = BM + 1;
  extern __shared__ float smem[];
  float* qs = smem;
  float* ks = qs + BM * LD;
  float* vs = ks + BM * LD;
  float* ps = vs + BM * LD;

  const Problem p = locate(g, blockIdx.x, true);
  const int64_t q0 = int64_t(p.tile) * BM;
  if (q0 >= p.n_sel) return;
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;

  load_rows<DM, BM>(qs, q, p, g.dim, q0);

  float m[R], l[R], acc[R][DC];
#pragma unroll
  for (int i = 0; i < R; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < DC; c++) acc[i][c] = 0.0f;
  }

  const int64_t kv_end = g.causal ? min(p.n_sel, q0 + BM) : p.n_sel;
  for (int64_t k0 = 0; k0 < kv_end; k0 += BM) {
    __syncthreads();  // the previous tile is no longer read
    load_rows<DM, BM>(ks, k, p, g.dim, k0);
    load_rows<DM, BM>(vs, v, p, g.dim, k0);
    __syncthreads();

    float s[R][R];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
      for (int j = 0; j < R; j++) s[i][j] = 0.0f;
#pragma unroll 8
    for (int d = 0; d < DM; d++) {
      float a[R], b[R];
#pragma unroll
      for (int i = 0; i < R; i++) a[i] = qs[(ty * R + i) * LD + d];
#pragma unroll
      for (int j = 0; j < R; j++) b[j] = ks[(tx + 16 * j) * LD + d];
#pragma unroll
      for (int i = 0; i < R; i++)
#pragma unroll
        for (int j = 0; j < R; j++) s[i][j] = fmaf(a[i], b[j], s[i][j]);
    }

#pragma unroll
    for (int i = 0; i < R; i++) {
      const int64_t tq = q0 + ty * R + i;
      float row_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < R; j++) {
        const int64_t tk = k0 + tx + 16 * j;
        const bool keep = tk < p.n_sel && (!g.causal || tk <= tq);
        s[i][j] = keep ? s[i][j] * g.scale_log2 : -INFINITY;
        row_max = fmaxf(row_max, s[i][j]);
      }
      row_max = row_max16(row_max);
      const float m_new = fmaxf(m[i], row_max);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet: no NaN
      const float alpha = exp2f(m[i] - m_use);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < R; j++) {
        const float e = exp2f(s[i][j] - m_use);
        ps[(ty * R + i) * PD + tx + 16 * j] = e;
        sum += e;
      }
      l[i] = l[i] * alpha + row_sum16(sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < DC; c++) acc[i][c] *= alpha;
    }
    __syncthreads();

#pragma unroll 4
    for (int c = 0; c < BM; c++) {
      float vv[DC];
#pragma unroll
      for (int dc = 0; dc < DC; dc++) vv[dc] = vs[c * LD + tx + 16 * dc];
#pragma unroll
      for (int i = 0; i < R; i++) {
        const float pv = ps[(ty * R + i) * PD + c];
#pragma unroll
        for (int dc = 0; dc < DC; dc++) acc[i][dc] = fmaf(pv, vv[dc], acc[i][dc]);
      }
    }
  }

  // merge into O and L; all threads of a row read the old L before any of them writes the new one
  float old_l[R];
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int64_t t = q0 + ty * R + i;
    old_l[i] = t < p.n_sel ? lse[p.row0 + t * p.rstride] : 0.0f;
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int64_t t = q0 + ty * R + i;
    if (t >= p.n_sel) continue;
    const int64_t row = p.row0 + t * p.rstride;
    const float lse_i = (m[i] + log2f(l[i])) * kLn2;
    const float hi = fmaxf(old_l[i], lse_i), lo = fminf(old_l[i], lse_i);
    const float l_new = hi + log1pf(expf(lo - hi));
    const float w_old = expf(old_l[i] - l_new);
    const float w_new = expf(lse_i - l_new) / l[i];
    float* out = o + row * g.dim;
#pragma unroll
    for (int dc = 0; dc < DC; dc++) {
      const int d = tx + 16 * dc;
      if (d < g.dim) out[d] = out[d] * w_old + acc[i][dc] * w_new;
    }
    if (tx == 0) lse[row] = l_new;
  }
}

}  // namespace

void launch_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, const AttentionShape& sh,
                              const AttentionOptions& opt, cudaStream_t s) {
  const int64_t rows = sh.batch * sh.seq * sh.heads;
  if (rows == 0) return;
  check_cuda(cudaMemsetAsync(o, 0, size_t(rows) * sh.head_dim * sizeof(float), s), "cudaMemsetAsync");
  launch_fill(lse, DType::F32, -INFINITY, rows, s);
  dispatch_head_dim(sh.head_dim, [&]<int DM, int BM>() {
    constexpr size_t smem = forward_smem<DM, BM>();
    auto kernel = attention_forward_kernel<DM, BM>;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "dilated attention forward");
    for (const auto& pat : opt.patterns) {
      const PatternGeom g = make_geom(sh, pat, opt, BM);
      const int64_t blocks = g.group * g.tiles;
      if (blocks > INT32_MAX) fail("dilated attention forward: too many blocks");
      kernel<<<static_cast<unsigned>(blocks), kAttnThreads, smem, s>>>(q, k, v, o, lse, g);
      check_launch("dilated attention forward kernel");
    }
  });
}

}  // namespace ln
