// The fused forward at head dim 64 on Hopper's warpgroup products (wgmma, sm_90a). The same work and
// merge as forward_kernel (flash_attention_forward.cu): a block takes 128 selected query rows of one
// problem, as two warpgroups of 64 rows. Q and kStages stages of 64 keys (K and V) lie in shared memory in
// the 128-byte swizzled layout, loaded by cp.async straight from the strided rows; each warpgroup then
// keeps its Q rows in registers as A fragments (shared memory feeds two operands of an m64n64 product no
// faster than the tensor cores take them). Per key tile each warpgroup runs S = Q K^T (K from shared
// memory), the online softmax on S in registers, and O += P V with P in registers (the accumulator layout
// packed to bf16 is the A fragment) and V read through a transposing descriptor.
//
// Each warpgroup overlaps its softmax with its own products (FlashAttention-3's intra-warpgroup
// pipelining): S_{j+1} and P_j V_j are queued together and the softmax of S_{j+1} runs while P_j V_j
// does. The loads of key tile j + kStages - 1 are issued right after the barrier of step j (every
// warpgroup has finished P_{j-1} V_{j-1}, so the stage of tile j - 1 is free): one barrier a key tile.
#pragma once

#include "flash_attention_mma.cuh"
#include "flash_forward_work.cuh"
#include "grid_dependency.cuh"
#include "wgmma.cuh"

namespace ln::flash::sm90 {

using namespace wg;  // the products, fences and loader of wgmma.cuh

constexpr int kThreads = 256;  // two warpgroups
constexpr int kQueryTile = 128;

constexpr int kKeys = 64;    // keys per stage: S is 64 x 64 per warpgroup, under 128 registers for two blocks an SM
constexpr int kStages = 4;   // stages of keys in shared memory
constexpr size_t kSmem = 1024 + size_t(kQueryTile + 2 * kStages * kKeys) * 128;  // alignment slack, q, k and v stages

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// FRESH: o and lse hold nothing yet and every row of the launch has a visible key (a pattern of dilation 1
// launched first): rows are written, not merged, so they need no clearing before nor reading here.
template <bool CAUSAL, bool FRESH, typename OutT, typename Source>
__global__ void __launch_bounds__(kThreads, 2) forward_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                                              const __nv_bfloat16* __restrict__ v, OutT* __restrict__ o,
                                                              float* __restrict__ lse, Source source, float scale_log2) {
#if defined(LN_HAVE_WGMMA)
  using bf16 = __nv_bfloat16;
  constexpr int D = 64;
  constexpr int BM = kQueryTile;
  constexpr int BN = kKeys;
  constexpr int NS = BN / 8;  // 8-column tiles of S
  constexpr int NO = D / 8;   // 8-column tiles of O
  constexpr int TILE = BN * D;  // elements of one stage of k (or v)
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  bf16* qs = reinterpret_cast<bf16*>(smem_raw + (((raw + 1023) & ~1023u) - raw));
  bf16* ks = qs + BM * D;
  bf16* vs = ks + kStages * TILE;

  // a pattern's launch may overlap the last blocks of the previous pattern's (launch_overlapping): it
  // computes its tile, then waits for that launch before merging into o and lse
  allow_next_grid();
  const ForwardWork w = source(blockIdx.x);
  const int64_t q0 = int64_t(w.tile) * BM;
  if (q0 >= w.q.n) {
    wait_for_previous_grid();  // ends no earlier than the previous launch, so the stream stays ordered
    return;
  }
  const int group = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int64_t wg_q0 = q0 + 64 * group;
  const int64_t my_q = wg_q0 + 16 * warp + lane / 4;  // this lane's rows: my_q and my_q + 8
  const int64_t kv_end = CAUSAL ? max(int64_t(0), min(w.k.n, q0 + BM + w.shift)) : w.k.n;
  const int key_tiles = static_cast<int>((kv_end + BN - 1) / BN);
  if (key_tiles == 0) {  // no query of the tile sees a key: its rows keep what they hold
    wait_for_previous_grid();
    return;
  }

  // cp.async group t holds key tile t (group 0 also q); groups past the last tile are empty.
  const StridedRows k_rows = strided_rows(k, w.k.row0, w.k.stride, w.k.n), v_rows = strided_rows(v, w.k.row0, w.k.stride, w.k.n);
  auto load_keys = [&](int t) {
    if (t < key_tiles) {
      load_rows_sw128<BN, kThreads>(ks + (t % kStages) * TILE, k_rows, int64_t(t) * BN);
      load_rows_sw128<BN, kThreads>(vs + (t % kStages) * TILE, v_rows, int64_t(t) * BN);
    }
    cp_async_commit();
  };
  load_rows_sw128<BM, kThreads>(qs, q, w.q.row0, w.q.stride, w.q.n, q0);
#pragma unroll
  for (int t = 0; t < kStages - 1; t++) load_keys(t);

  const uint32_t k_addr = static_cast<uint32_t>(__cvta_generic_to_shared(ks));
  const uint32_t v_addr = static_cast<uint32_t>(__cvta_generic_to_shared(vs));

  float acc[NO * 4];
  float s[NS * 4];
  uint32_t p[BN / 16][4];  // P in bf16 as the A fragments of the BN / 16 steps of P V
  float row_m[2] = {-INFINITY, -INFINITY}, row_l[2] = {0.0f, 0.0f};  // running max (log2 units), lane's share of the sum
#pragma unroll
  for (int i = 0; i < NO * 4; i++) acc[i] = 0.0f;

  uint32_t qf[D / 16][4];  // this warpgroup's 64 Q rows as A fragments, read from shared memory once q has arrived
  auto issue_s = [&](int t) {
    const uint64_t k_desc = desc_kmajor(k_addr + (t % kStages) * BN * 128);
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) mma_rs_n64<0>(s, qf[kk], desc_plus(k_desc, kk * 32), kk > 0);
    commit();
  };
  auto issue_pv = [&](int t) {
    const uint64_t v_desc = make_desc(v_addr + (t % kStages) * BN * 128, BN * 128, 1024);
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) mma_rs_n64<1>(acc, p[kk], desc_plus(v_desc, kk * 16 * 128));
    commit();
  };
  // Online softmax of S for key tile t, in place: S becomes exp(S - m) (unnormalised P); returns the
  // factors by which O's rows must shrink. Touches no register a pending P V product uses.
  auto softmax = [&](int t, float (&alpha)[2]) {
    const int64_t k0 = int64_t(t) * BN;
    if (k0 + BN > w.k.n || (CAUSAL && k0 + BN - 1 > wg_q0 + w.shift)) {
      // in the tile's own (32-bit) key index: keys below `end` exist, row r sees keys up to last[r]
      const int end = static_cast<int>(min(w.k.n - k0, int64_t(BN)));
      int last[2];
#pragma unroll
      for (int r = 0; r < 2; r++) last[r] = CAUSAL ? static_cast<int>(max(min(my_q + 8 * r + w.shift - k0, int64_t(BN)), int64_t(-1))) : BN;
#pragma unroll
      for (int n = 0; n < NS; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int key = n * 8 + 2 * (lane % 4) + (e & 1);
          if (key >= end || key > last[e / 2]) s[4 * n + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < NS; n++) mx = fmaxf(mx, fmaxf(s[4 * n + 2 * r], s[4 * n + 2 * r + 1]));
      const float m_new = fmaxf(row_m[r], quad_max(mx) * scale_log2);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet: no NaN
      alpha[r] = ex2(row_m[r] - m_use);
      row_m[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < NS; n++) {
        s[4 * n + 2 * r] = ex2(fmaf(s[4 * n + 2 * r], scale_log2, -m_use));
        s[4 * n + 2 * r + 1] = ex2(fmaf(s[4 * n + 2 * r + 1], scale_log2, -m_use));
        sum += s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
      }
      row_l[r] = row_l[r] * alpha[r] + sum;
    }
  };
  // Once the previous P V is done: O's rows rescaled, and P packed to bf16 A fragments.
  auto rescale_and_pack = [&](const float (&alpha)[2]) {
#pragma unroll
    for (int n = 0; n < NO; n++) {
      acc[4 * n] *= alpha[0];
      acc[4 * n + 1] *= alpha[0];
      acc[4 * n + 2] *= alpha[1];
      acc[4 * n + 3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      p[kk][0] = pack_bf16(s[8 * kk], s[8 * kk + 1]);
      p[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      p[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      p[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };

  cp_async_wait<kStages - 2>();  // q and key tile 0
  fence_proxy_async();  // this thread's cp.async writes, before the barrier, for the tensor cores' reads
  __syncthreads();
  {
    const unsigned char* my_q_tile = reinterpret_cast<const unsigned char*>(qs) + group * 64 * 128;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
      for (int h = 0; h < 4; h++)
        qf[kk][h] = *reinterpret_cast<const uint32_t*>(my_q_tile + swz(warp * 16 + lane / 4 + 8 * (h % 2), 2 * kk + h / 2) + 4 * (lane % 4));
  }
  float alpha[2];
  fence();
  issue_s(0);
  wait<0>();
  fence_operand(s);
  softmax(0, alpha);
  rescale_and_pack(alpha);
  // Step j: S_{j+1} = Q K_{j+1}^T, then O += P_j V_j, both queued on the tensor cores; the softmax of
  // S_{j+1} runs while P_j V_j does. No branch around the products (a branch makes ptxas serialize them):
  // in causal blocks the first warpgroup also runs the key tile past its diagonal, fully masked.
  for (int j = 0; j + 1 < key_tiles; j++) {
    cp_async_wait<kStages - 3>();  // key tile j + 1
    fence_proxy_async();
    __syncthreads();
    load_keys(j + kStages - 1);  // into the stage of tile j - 1, which every warpgroup is done with
    fence();                     // orders the writes of acc, p and s before the products
    issue_s(j + 1);
    issue_pv(j);
    wait<1>();
    fence_operand(s);
    softmax(j + 1, alpha);
    wait<0>();
    fence_operand(acc);
    rescale_and_pack(alpha);
  }
  fence();
  issue_pv(key_tiles - 1);
  wait<0>();
  fence_operand(acc);

  // Merge this lane's rows into O and L. Every lane of a quad reads the old L before one writes it.
  wait_for_previous_grid();
  float l[2], old_l[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t t = my_q + 8 * r;
    l[r] = quad_sum(row_l[r]);
    old_l[r] = !FRESH && t < w.q.n ? lse[w.q.row0 + t * w.q.stride] : -INFINITY;
  }
  __syncwarp();
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t t = my_q + 8 * r;
    if (t >= w.q.n || (!FRESH && l[r] == 0.0f)) continue;  // past the end, or no visible key
    const int64_t row = w.q.row0 + t * w.q.stride;
    OutT* out = o + row * D + 2 * (lane % 4);
    if constexpr (FRESH) {
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
      for (int n = 0; n < NO; n++) store_pair(out + n * 8, acc[4 * n + 2 * r] * inv, acc[4 * n + 2 * r + 1] * inv);
      if (lane % 4 == 0) lse[row] = l[r] > 0.0f ? (row_m[r] + log2f(l[r])) * kLn2 : -INFINITY;
    } else {
      const float lse_i = (row_m[r] + log2f(l[r])) * kLn2;
      const float hi = fmaxf(old_l[r], lse_i), lo = fminf(old_l[r], lse_i);
      const float l_new = hi + log1pf(expf(lo - hi));
      const float w_old = expf(old_l[r] - l_new);
      const float w_new = expf(lse_i - l_new) / l[r];
#pragma unroll
      for (int n = 0; n < NO; n++) {
        const float x = ldf(out[n * 8]) * w_old + acc[4 * n + 2 * r] * w_new;
        const float y = ldf(out[n * 8 + 1]) * w_old + acc[4 * n + 2 * r + 1] * w_new;
        store_pair(out + n * 8, x, y);
      }
      if (lane % 4 == 0) lse[row] = l_new;
    }
  }
#endif
}


}  // namespace ln::flash::sm90
