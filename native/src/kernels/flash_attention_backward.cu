// Fused backward on tensor cores: FlashAttention-2's backward run per pattern with the final L and
// Dsum = rowsum(dO * O), which is exact for the mixture (docs/ATTENTION.md):
//   P = exp(S - L), dV += P^T dO, dS = P (dP - Dsum), dQ += dS K scale, dK += dS^T Q scale.
// A block owns 128 selected keys of one (batch, head, segment); its warps own 16 or 32 keys each
// (BackwardConfig) and stream the segment's query tiles (q, dO, L, Dsum; double-buffered) past them,
// keeping dK and dV in fp32 registers. dS goes through shared memory so that the warps can then split
// dQ = dS K (16 query rows by a slice of the head dimension each), added to the fp32 dq with atomics: one
// add per 128 keys. Patterns run in order, and within a launch every key row belongs to one block, so dk
// and dv are read-modify-written without atomics.
#include "flash_attention.h"

#include "../device.h"
#include "flash_attention_mma.cuh"

namespace ln {

namespace flash {
namespace {

constexpr int kBlockKeys = 128;

// Block shape per head dimension: MT 16-key tiles per warp (so 128 / (16 MT) warps), BM query rows per
// step, and the blocks an SM should hold. At D = 64 a warp owns 32 keys, so each Q and dO fragment feeds
// two mma; with 32-row query tiles a thread stays within 255 registers and two 4-warp blocks share an SM
// (each ~66 KB of shared memory), one computing while the other waits.
template <int D>
struct BackwardConfig {
  static constexpr int kQueryTile = D == 64 ? 32 : kKeyTile;
  static constexpr int kMinBlocks = D == 64 ? 2 : 1;
  static constexpr int kKeyTiles = D == 64 ? 2 : 1;
  static constexpr int kWarps = kBlockKeys / (16 * kKeyTiles);
  static constexpr int kThreads = 32 * kWarps;
};

template <int D>
constexpr size_t backward_smem() {
  constexpr int BM = BackwardConfig<D>::kQueryTile;
  // k and v; two buffers each of q and dO; dS^T; two buffers each of L and Dsum
  return sizeof(bf16) * (size_t(2 * kBlockKeys + 4 * BM) * (D + kPad) + size_t(kBlockKeys) * (BM + kPad)) +
         sizeof(float) * 4 * BM;
}

__device__ __forceinline__ void add_pair(float* at, float x, float y) {
#if __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(at), make_float2(x, y));
#else
  atomicAdd(at, x);
  atomicAdd(at + 1, y);
#endif
}

template <int D, bool CAUSAL>
__global__ void __launch_bounds__(BackwardConfig<D>::kThreads, BackwardConfig<D>::kMinBlocks)
    backward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ d_o,
                    const float* __restrict__ lse, const float* __restrict__ dsum, float* __restrict__ dq, float* __restrict__ dk,
                    float* __restrict__ dv, PatternGeom g) {
  using C = BackwardConfig<D>;
  constexpr int BN = kBlockKeys, BM = C::kQueryTile, MT = C::kKeyTiles, W = C::kWarps, T = C::kThreads;
  constexpr int LD = D + kPad;
  constexpr int LDS = BM + kPad;
  constexpr int KD = D / 16;            // k-steps over the head dimension
  constexpr int NS = BM / 8;            // 8-column tiles of S^T (query columns)
  constexpr int NO = D / 8;             // 8-column tiles of dK and dV
  constexpr int RG = BM / 16;           // dQ: 16-row groups of the query tile...
  constexpr int DC = D * RG / W;        // ...by column slices of DC, one pair per warp
  constexpr int NQ = DC / 8;            // 8-column tiles of a warp's slice of dQ
  static_assert(NQ % 2 == 0 && W % RG == 0, "dQ split");
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  bf16* ks = reinterpret_cast<bf16*>(smem_bytes);
  bf16* vs = ks + BN * LD;
  bf16* qs = vs + BN * LD;        // two buffers
  bf16* dos = qs + 2 * BM * LD;   // two buffers
  bf16* dst = dos + 2 * BM * LD;  // dS^T: [key][query]
  // Two buffers, each BM values of L followed by BM of Dsum.
  float* lrow = reinterpret_cast<float*>(dst + BN * LDS);

  const Problem p = locate(g, blockIdx.x, false, true);
  const int64_t k0 = int64_t(p.tile) * BN;
  if (k0 >= p.n_sel) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wk = warp * 16 * MT;  // the warp's first key, block-relative
  const float scale = g.scale_log2 * kLn2;
  const int first_q = CAUSAL ? static_cast<int>(k0 / BM) : 0;
  const int q_tiles = static_cast<int>((p.n_sel + BM - 1) / BM);

  // Query tile j's L (natural log) and Dsum into row buffer `buf`, with its q and dO tiles (the caller
  // commits). Rows past the end read as zeros, like their q and dO rows: such a query then gets P = 1
  // against zero dO and contributes nothing.
  auto load_rows = [&](int j, int buf) {
    const int64_t m0 = int64_t(j) * BM;
    load_tile_async<D, BM, T>(qs + buf * BM * LD, q, p.row0, p.rstride, p.n_sel, m0);
    load_tile_async<D, BM, T>(dos + buf * BM * LD, d_o, p.row0, p.rstride, p.n_sel, m0);
    if (threadIdx.x < 2 * BM) {
      const int i = threadIdx.x % BM;
      const bool valid = m0 + i < p.n_sel;
      const float* from = (threadIdx.x < BM ? lse : dsum) + (valid ? p.row0 + (m0 + i) * p.rstride : 0);
      cp_async4(lrow + buf * 2 * BM + threadIdx.x, from, valid);
    }
  };
  static_assert(2 * BM <= T, "row loads");

  load_tile_async<D, BN, T>(ks, k, p.row0, p.rstride, p.n_sel, k0);
  load_tile_async<D, BN, T>(vs, v, p.row0, p.rstride, p.n_sel, k0);
  load_rows(first_q, 0);
  cp_async_commit();

  float dk_acc[MT][NO][4], dv_acc[MT][NO][4];
#pragma unroll
  for (int t = 0; t < MT; t++)
#pragma unroll
    for (int n = 0; n < NO; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) dk_acc[t][n][e] = dv_acc[t][n][e] = 0.0f;

  for (int j = first_q; j < q_tiles; j++) {
    const int buf = (j - first_q) & 1;
    if (j + 1 < q_tiles) {
      load_rows(j + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* qt = qs + buf * BM * LD;
    const bf16* dot = dos + buf * BM * LD;
    const float* lr = lrow + buf * 2 * BM;
    const float* dr = lr + BM;
    const int64_t m0 = int64_t(j) * BM;

    // S^T = K Q^T and dP^T = V dO^T for this warp's keys against the tile's queries, interleaved so that
    // the two products' independent mma chains hide each other's latency; each Q and dO fragment feeds
    // all MT key tiles.
    float s[MT][NS][4], ds[MT][NS][4];
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
      for (int n = 0; n < NS; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[t][n][e] = ds[t][n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++) {
      uint32_t ak[MT][4], av[MT][4];
#pragma unroll
      for (int t = 0; t < MT; t++) {
        load_a(ak[t], ks, LD, wk + 16 * t, kk * 16);
        load_a(av[t], vs, LD, wk + 16 * t, kk * 16);
      }
#pragma unroll
      for (int n = 0; n < NS; n += 2) {
        uint32_t bq[4], bd[4];
        load_b_rows(bq, qt, LD, n * 8, kk * 16);
        load_b_rows(bd, dot, LD, n * 8, kk * 16);
#pragma unroll
        for (int t = 0; t < MT; t++) {
          mma(s[t][n], ak[t], bq[0], bq[1]);
          mma(ds[t][n], av[t], bd[0], bd[1]);
          mma(s[t][n + 1], ak[t], bq[2], bq[3]);
          mma(ds[t][n + 1], av[t], bd[2], bd[3]);
        }
      }
    }
    // Keys past the segment's end, or (causal) after a query, only in the tiles near the diagonal.
    if (k0 + BN > p.n_sel || (CAUSAL && m0 < k0 + BN)) {
      const int key_end = static_cast<int>(min(p.n_sel - k0, int64_t(BN)));  // block-relative
      const int q_off = static_cast<int>(m0 - k0);                           // query c is at key position q_off + c
#pragma unroll
      for (int t = 0; t < MT; t++)
#pragma unroll
        for (int n = 0; n < NS; n++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int c = n * 8 + 2 * (lane % 4) + (e & 1);
            const int key = wk + 16 * t + lane / 4 + 8 * (e / 2);
            const bool keep = key < key_end && !(CAUSAL && key > q_off + c);
            s[t][n][e] = keep ? exp2f(fmaf(s[t][n][e], g.scale_log2, -lr[c] * kLog2e)) : 0.0f;
          }
    } else {
#pragma unroll
      for (int t = 0; t < MT; t++)
#pragma unroll
        for (int n = 0; n < NS; n++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            s[t][n][e] = exp2f(fmaf(s[t][n][e], g.scale_log2, -lr[n * 8 + 2 * (lane % 4) + (e & 1)] * kLog2e));
    }

    // dS^T = P^T (dP^T - Dsum)
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
      for (int n = 0; n < NS; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) ds[t][n][e] = s[t][n][e] * (ds[t][n][e] - dr[n * 8 + 2 * (lane % 4) + (e & 1)]);

    // dV += P^T dO and dK += dS^T Q, interleaved; each dO and Q fragment feeds all MT key tiles.
#pragma unroll
    for (int kk = 0; kk < BM / 16; kk++) {
      uint32_t ap[MT][4], as[MT][4];
#pragma unroll
      for (int t = 0; t < MT; t++) {
        c_to_a(ap[t], s[t][2 * kk], s[t][2 * kk + 1]);
        c_to_a(as[t], ds[t][2 * kk], ds[t][2 * kk + 1]);
      }
#pragma unroll
      for (int n = 0; n < NO; n += 2) {
        uint32_t bd[4], bq[4];
        load_b_cols(bd, dot, LD, n * 8, kk * 16);
        load_b_cols(bq, qt, LD, n * 8, kk * 16);
#pragma unroll
        for (int t = 0; t < MT; t++) {
          mma(dv_acc[t][n], ap[t], bd[0], bd[1]);
          mma(dk_acc[t][n], as[t], bq[0], bq[1]);
          mma(dv_acc[t][n + 1], ap[t], bd[2], bd[3]);
          mma(dk_acc[t][n + 1], as[t], bq[2], bq[3]);
        }
      }
    }

    // dS^T to shared memory for dQ.
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
      for (int n = 0; n < NS; n++) {
        bf16* at = dst + (wk + 16 * t + lane / 4) * LDS + n * 8 + 2 * (lane % 4);
        *reinterpret_cast<uint32_t*>(at) = pack_bf16(ds[t][n][0], ds[t][n][1]);
        *reinterpret_cast<uint32_t*>(at + 8 * LDS) = pack_bf16(ds[t][n][2], ds[t][n][3]);
      }
    __syncthreads();

    // dQ = dS K: warp w takes query rows 16 (w % RG) .. and columns DC (w / RG) ...
    const int q_row = 16 * (warp % RG), d0 = (warp / RG) * DC;
    float dqa[2][NQ][4];  // even and odd key steps: twice the independent mma chains
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int n = 0; n < NQ; n++) dqa[h][n][0] = dqa[h][n][1] = dqa[h][n][2] = dqa[h][n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      uint32_t a[4];
      load_a_trans(a, dst, LDS, q_row, kk * 16);
#pragma unroll
      for (int n = 0; n < NQ; n += 2) {
        uint32_t b[4];
        load_b_cols(b, ks, LD, d0 + n * 8, kk * 16);
        mma(dqa[kk & 1][n], a, b[0], b[1]);
        mma(dqa[kk & 1][n + 1], a, b[2], b[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int64_t t = m0 + q_row + lane / 4 + 8 * r;
      if (t >= p.n_sel) continue;
      float* out = dq + (p.row0 + t * p.rstride) * D + d0 + 2 * (lane % 4);
#pragma unroll
      for (int n = 0; n < NQ; n++)
        add_pair(out + n * 8, (dqa[0][n][2 * r] + dqa[1][n][2 * r]) * scale, (dqa[0][n][2 * r + 1] + dqa[1][n][2 * r + 1]) * scale);
    }
  }

  // This block's keys: add dK and dV into the gradients of earlier patterns.
#pragma unroll
  for (int t = 0; t < MT; t++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int64_t key = k0 + wk + 16 * t + lane / 4 + 8 * r;
      if (key >= p.n_sel) continue;
      const int64_t offset = (p.row0 + key * p.rstride) * D + 2 * (lane % 4);
#pragma unroll
      for (int n = 0; n < NO; n++) {
        float2* pk = reinterpret_cast<float2*>(dk + offset + n * 8);
        float2* pv = reinterpret_cast<float2*>(dv + offset + n * 8);
        float2 a = *pk, b = *pv;
        a.x += dk_acc[t][n][2 * r] * scale;
        a.y += dk_acc[t][n][2 * r + 1] * scale;
        b.x += dv_acc[t][n][2 * r];
        b.y += dv_acc[t][n][2 * r + 1];
        *pk = a;
        *pv = b;
      }
    }
}

}  // namespace
}  // namespace flash

void launch_flash_attention_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                     const __nv_bfloat16* d_o, const float* lse, const float* dsum, float* dq, float* dk, float* dv,
                                     const AttentionShape& sh, const AttentionOptions& opt, cudaStream_t s) {
  const int64_t rows = sh.batch * sh.seq * sh.heads;
  if (rows == 0) return;
  const size_t bytes = size_t(rows) * sh.head_dim * sizeof(float);
  for (float* grad : {dq, dk, dv}) check_cuda(cudaMemsetAsync(grad, 0, bytes, s), "cudaMemsetAsync");
  flash::dispatch_flash(sh.head_dim, opt.causal, [&]<int D, bool CAUSAL>() {
    constexpr size_t smem = flash::backward_smem<D>();
    auto kernel = flash::backward_kernel<D, CAUSAL>;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "fused dilated attention backward");
    for (const auto& pat : opt.patterns) {
      const PatternGeom g = make_geom(sh, pat, opt, flash::kBlockKeys);
      const int64_t blocks = g.group * g.tiles;
      if (blocks > INT32_MAX) fail("fused dilated attention backward: too many blocks");
      kernel<<<static_cast<unsigned>(blocks), flash::BackwardConfig<D>::kThreads, smem, s>>>(q, k, v, d_o, lse, dsum, dq, dk, dv, g);
      check_launch("fused dilated attention backward kernel");
    }
  });
}

}  // namespace ln
