// The fused forward at head dim 64 on Hopper's warpgroup products (wgmma, sm_90a). The same work and
// merge as forward_kernel (flash_attention_forward.cu): a block takes 128 selected query rows of one
// problem, now as two warpgroups of 64 rows. Q and a stage of BN keys (K and V) lie in shared memory in the
// 128-byte swizzled layout, loaded by cp.async straight from the strided rows (two stages, as before).
// Per key tile each warpgroup runs S = Q K^T (both operands from shared memory), the online softmax on
// S in registers, and O += P V with P in registers (the accumulator layout packed to bf16 is the A
// fragment) and V read through a transposing descriptor. While one warpgroup does its softmax, the tensor
// cores run the other warpgroups' products.
#pragma once

#include "flash_attention_mma.cuh"
#include "flash_forward_work.cuh"
#include "wgmma.cuh"

namespace ln::flash::sm90 {

constexpr int kThreads = 256;  // two warpgroups
constexpr int kQueryTile = 128;

// Keys per stage: BN = 128 (S one 64 x 128 product per k-step; needs more than 128 registers, so one block
// an SM) or 64 (two blocks an SM under 128 registers).
template <int BN>
constexpr size_t kSmem = 1024 + size_t(kQueryTile + 4 * BN) * 128;  // alignment slack, q, two stages of k and v
template <int BN>
constexpr int kBlocksPerSm = BN == 64 ? 2 : 1;

template <int BN, bool CAUSAL, typename OutT, typename Source>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm<BN>) forward_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                                              const __nv_bfloat16* __restrict__ v, OutT* __restrict__ o,
                                                              float* __restrict__ lse, Source source, float scale_log2) {
#if defined(LN_HAVE_WGMMA)
  using bf16 = __nv_bfloat16;
  constexpr int D = 64;
  constexpr int BM = kQueryTile;
  constexpr int NS = BN / 8;  // 8-column tiles of S
  constexpr int NO = D / 8;   // 8-column tiles of O
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  bf16* qs = reinterpret_cast<bf16*>(smem_raw + (((raw + 1023) & ~1023u) - raw));
  bf16* ks = qs + BM * D;
  bf16* vs = ks + 2 * BN * D;

  const ForwardWork w = source(blockIdx.x);
  const int64_t q0 = int64_t(w.tile) * BM;
  if (q0 >= w.q.n) return;
  const int wg = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int64_t wg_q0 = q0 + 64 * wg;
  const int64_t my_q = wg_q0 + 16 * warp + lane / 4;  // this lane's rows: my_q and my_q + 8
  const int64_t kv_end = CAUSAL ? max(int64_t(0), min(w.k.n, q0 + BM + w.shift)) : w.k.n;
  const int key_tiles = static_cast<int>((kv_end + BN - 1) / BN);
  if (key_tiles == 0) return;  // no query of the tile sees a key: its rows keep what they hold

  load_rows_sw128<BM, kThreads>(qs, q, w.q.row0, w.q.stride, w.q.n, q0);
  load_rows_sw128<BN, kThreads>(ks, k, w.k.row0, w.k.stride, w.k.n, 0);
  load_rows_sw128<BN, kThreads>(vs, v, w.k.row0, w.k.stride, w.k.n, 0);
  cp_async_commit();

  const uint64_t q_desc = desc_sw128(static_cast<uint32_t>(__cvta_generic_to_shared(qs)) + wg * 64 * 128, 16, 1024);
  const uint32_t k_addr = static_cast<uint32_t>(__cvta_generic_to_shared(ks));
  const uint32_t v_addr = static_cast<uint32_t>(__cvta_generic_to_shared(vs));

  float acc[NO * 4];
  float row_m[2] = {-INFINITY, -INFINITY}, row_l[2] = {0.0f, 0.0f};  // running max (log2 units), lane's share of the sum
#pragma unroll
  for (int i = 0; i < NO * 4; i++) acc[i] = 0.0f;

  for (int j = 0; j < key_tiles; j++) {
    const int buf = j & 1;
    const int64_t k0 = int64_t(j) * BN;
    if (j + 1 < key_tiles) {
      load_rows_sw128<BN, kThreads>(ks + (buf ^ 1) * BN * D, k, w.k.row0, w.k.stride, w.k.n, k0 + BN);
      load_rows_sw128<BN, kThreads>(vs + (buf ^ 1) * BN * D, v, w.k.row0, w.k.stride, w.k.n, k0 + BN);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    fence_proxy_async();  // this thread's cp.async writes, before the barrier, for the tensor cores' reads
    __syncthreads();
    // A causal warpgroup whose rows all precede this key tile has nothing to do here.
    if (!(CAUSAL && k0 > wg_q0 + 63 + w.shift)) {
      float s[NS * 4];
      const uint64_t k_desc = desc_sw128(k_addr + buf * BN * 128, 16, 1024);
      fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        if constexpr (BN == 128) mma_ss_n128(s, desc_plus(q_desc, kk * 32), desc_plus(k_desc, kk * 32), kk > 0);
        else mma_ss_n64(s, desc_plus(q_desc, kk * 32), desc_plus(k_desc, kk * 32), kk > 0);
      }
      commit();
      wait<0>();
      hold(s);

      // Keys past the end, or (causal) past the diagonal, only in the block's last tiles.
      if (k0 + BN > w.k.n || (CAUSAL && k0 + BN - 1 > wg_q0 + w.shift)) {
#pragma unroll
        for (int n = 0; n < NS; n++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int64_t tk = k0 + n * 8 + 2 * (lane % 4) + (e & 1);
            const int64_t tq = my_q + 8 * (e / 2);
            if (tk >= w.k.n || (CAUSAL && tk > tq + w.shift)) s[4 * n + e] = -INFINITY;
          }
      }

      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < NS; n++) mx = fmaxf(mx, fmaxf(s[4 * n + 2 * r], s[4 * n + 2 * r + 1]));
        const float m_new = fmaxf(row_m[r], quad_max(mx) * scale_log2);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet: no NaN
        alpha[r] = exp2f(row_m[r] - m_use);
        row_m[r] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < NS; n++) {
          s[4 * n + 2 * r] = exp2f(fmaf(s[4 * n + 2 * r], scale_log2, -m_use));
          s[4 * n + 2 * r + 1] = exp2f(fmaf(s[4 * n + 2 * r + 1], scale_log2, -m_use));
          sum += s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
        }
        row_l[r] = row_l[r] * alpha[r] + sum;
      }
#pragma unroll
      for (int n = 0; n < NO; n++) {
        acc[4 * n] *= alpha[0];
        acc[4 * n + 1] *= alpha[0];
        acc[4 * n + 2] *= alpha[1];
        acc[4 * n + 3] *= alpha[1];
      }

      uint32_t p[BN / 16][4];  // P in bf16 as the A fragments of the BN / 16 steps of P V
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) {
        p[kk][0] = pack_bf16(s[8 * kk], s[8 * kk + 1]);
        p[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
        p[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
        p[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
      }
      const uint64_t v_desc = desc_sw128(v_addr + buf * BN * 128, BN * 128, 1024);
      fence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) mma_rs_n64(acc, p[kk], desc_plus(v_desc, kk * 16 * 128), true);
      commit();
      wait<0>();
      hold(acc);
    }
    __syncthreads();  // the next iteration's loads overwrite the stage read here
  }

  // Merge this lane's rows into O and L. Every lane of a quad reads the old L before one writes it.
  float l[2], old_l[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t t = my_q + 8 * r;
    l[r] = quad_sum(row_l[r]);
    old_l[r] = t < w.q.n ? lse[w.q.row0 + t * w.q.stride] : 0.0f;
  }
  __syncwarp();
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t t = my_q + 8 * r;
    if (t >= w.q.n || l[r] == 0.0f) continue;  // past the end, or no visible key
    const int64_t row = w.q.row0 + t * w.q.stride;
    const float lse_i = (row_m[r] + log2f(l[r])) * kLn2;
    const float hi = fmaxf(old_l[r], lse_i), lo = fminf(old_l[r], lse_i);
    const float l_new = hi + log1pf(expf(lo - hi));
    const float w_old = expf(old_l[r] - l_new);
    const float w_new = expf(lse_i - l_new) / l[r];
    OutT* out = o + row * D + 2 * (lane % 4);
#pragma unroll
    for (int n = 0; n < NO; n++) {
      const float x = to_float(out[n * 8]) * w_old + acc[4 * n + 2 * r] * w_new;
      const float y = to_float(out[n * 8 + 1]) * w_old + acc[4 * n + 2 * r + 1] * w_new;
      store_pair(out + n * 8, x, y);
    }
    if (lane % 4 == 0) lse[row] = l_new;
  }
#endif
}

}  // namespace ln::flash::sm90
