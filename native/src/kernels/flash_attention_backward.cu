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

#include <cstdlib>
#include <cstring>

#include "../device.h"
#include "flash_attention_mma.cuh"
#include "grid_dependency.cuh"
#include "math.cuh"
#include "wgmma.cuh"

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

// Atomic adds whose old values nobody reads, as `red` (atomicAdd on float2 and float4 is `atom` in PTX,
// which returns them; ptxas makes it a reduction only when it sees the result unused).
__device__ __forceinline__ void add_pair(float* at, float x, float y) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(at), "f"(x), "f"(y));
#else
  atomicAdd(at, x);
  atomicAdd(at + 1, y);
#endif
}

#ifdef LN_HAVE_WGMMA  // the wgmma backward's float4 dQ adds
__device__ __forceinline__ void add_quad(float* at, float x, float y, float z, float w) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(at), "f"(x), "f"(y), "f"(z), "f"(w));
}
#endif

// Two adjacent columns of one key's dK and dV: added to what earlier patterns left there, or, `fresh`
// (the launch's pattern selects every row: the first, of dilation 1), stored over memory never cleared.
__device__ __forceinline__ void store_key_grads(float* at_k, float* at_v, float kx, float ky, float vx, float vy, bool fresh) {
  float2* pk = reinterpret_cast<float2*>(at_k);
  float2* pv = reinterpret_cast<float2*>(at_v);
  if (!fresh) {
    const float2 a = *pk, b = *pv;
    kx += a.x, ky += a.y, vx += b.x, vy += b.y;
  }
  *pk = make_float2(kx, ky);
  *pv = make_float2(vx, vy);
}

template <int D, bool CAUSAL>
__global__ void __launch_bounds__(BackwardConfig<D>::kThreads, BackwardConfig<D>::kMinBlocks)
    backward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ d_o,
                    const float* __restrict__ lse, const float* __restrict__ dsum, float* __restrict__ dq, float* __restrict__ dk,
                    float* __restrict__ dv, PatternGeom g, bool fresh) {
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

  // This block's keys: add dK and dV into the gradients of earlier patterns (or store them, `fresh`).
#pragma unroll
  for (int t = 0; t < MT; t++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int64_t key = k0 + wk + 16 * t + lane / 4 + 8 * r;
      if (key >= p.n_sel) continue;
      const int64_t offset = (p.row0 + key * p.rstride) * D + 2 * (lane % 4);
#pragma unroll
      for (int n = 0; n < NO; n++)
        store_key_grads(dk + offset + n * 8, dv + offset + n * 8, dk_acc[t][n][2 * r] * scale, dk_acc[t][n][2 * r + 1] * scale,
                        dv_acc[t][n][2 * r], dv_acc[t][n][2 * r + 1], fresh);
    }
}


// The same backward on Hopper's warpgroup products (sm_90a), D = 64. A block of NWG warpgroups owns
// 64 NWG keys, 64 a warpgroup; per 64-row query tile each warpgroup computes S^T = K Q^T and
// dP^T = V dO^T (operands in shared memory), P^T and dS^T in registers, then dV += P^T dO and
// dK += dS^T Q with P^T and dS^T as register operands. dS^T goes to shared memory, where dQ = dS K (64
// queries by 64 / NWG columns a warpgroup, over all the block's keys) reads it. Tiles are in the 128-byte
// swizzle (wgmma.cuh), loaded by cp.async as in the mma.sync kernel, double-buffered.
// With PIPE, dQ of one tile runs with the next tile's products and is added to dq while that tile's dV
// and dK run (dS^T double-buffered); one barrier a tile instead of two.
template <int NWG, int MINB, bool PIPE>
struct WgConfig {
  static constexpr int kKeys = 64 * NWG, kThreads = 128 * NWG;
  static constexpr int kQueries = 64;
  static constexpr size_t kTile = 64 * 128;  // 64 rows of 64 bf16
  // k, v (NWG tiles each), q and dO (two buffers each), dS^T (NWG tiles, twice with PIPE), L and Dsum
  // (two buffers), and room to align the start to 1024 bytes.
  // One warpgroup, two blocks an SM: room to stage dQ (64 rows of 64 fp32, padded to 72) for bulk reductions.
  static constexpr bool kStage = NWG == 1 && MINB <= 2;
  static constexpr int kStagePitch = 72;
  static constexpr size_t kSmem = (2 * NWG + 4 + NWG * (PIPE ? 2 : 1)) * kTile + 4 * kQueries * sizeof(float) +
                                  (kStage ? 64 * kStagePitch * sizeof(float) : 0) + 1024;
};

// dQ's way into dq (LONGNET_FLASH_DQ=red2, red4, bulk): float2 atomics, float4 atomics (default), or
// staged in shared memory and added a row at a time by bulk reductions (the copy engine; one warpgroup,
// two blocks an SM only, else float2). On an H100 the three measured the same within 4%.
constexpr int kDqRed2 = 0, kDqRed4 = 1, kDqBulk = 2;

#ifdef LN_HAVE_WGMMA
__device__ __forceinline__ void bulk_reduce_add(float* dst, const float* src, uint32_t bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst), "r"(smem_address(src)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
// Waits until the committed bulk operations have read their shared-memory sources.
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

#endif

template <bool CAUSAL, int NWG, int MINB, bool PIPE>
__global__ void __launch_bounds__(WgConfig<NWG, MINB, PIPE>::kThreads, MINB)
    backward_wgmma_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                          const bf16* __restrict__ d_o, const float* __restrict__ lse, const float* __restrict__ dsum,
                          float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, PatternGeom g, int dq_way,
                          bool fresh) {
#ifdef LN_HAVE_WGMMA
  using C = WgConfig<NWG, MINB, PIPE>;
  constexpr int BN = C::kKeys, BM = C::kQueries, D = 64, T = C::kThreads;
  constexpr int DQN = 64 / NWG;  // dQ columns a warpgroup
  constexpr size_t TB = C::kTile;
  extern __shared__ __align__(1024) unsigned char wg_smem_raw[];
  unsigned char* base = wg_smem_raw + ((1024 - (smem_address(wg_smem_raw) & 1023)) & 1023);
  unsigned char* ks = base;                  // BN key rows
  unsigned char* vs = ks + NWG * TB;         // BN value rows
  unsigned char* qs = vs + NWG * TB;         // two buffers of 64 rows
  unsigned char* dos = qs + 2 * TB;          // two buffers of 64 rows
  unsigned char* dst = dos + 2 * TB;         // dS^T: BN key rows of 64 queries (two buffers with PIPE)
  float* lrow = reinterpret_cast<float*>(dst + (PIPE ? 2 : 1) * NWG * TB);  // two buffers: BM of L, then BM of Dsum
  float* stage = lrow + 4 * BM;  // with C::kStage: dQ rows for the bulk reductions
  const int dq_mode = C::kStage || dq_way != kDqBulk ? dq_way : kDqRed2;

  // a pattern's launch may overlap the last blocks of the previous pattern's (launch_overlapping): its dq
  // adds commute with theirs, and it waits for that launch only before adding into dk and dv
  allow_next_grid();
  const Problem p = locate(g, blockIdx.x, false, true);
  const int64_t k0 = int64_t(p.tile) * BN;
  if (k0 >= p.n_sel) {
    wait_for_previous_grid();  // ends no earlier than the previous launch, so the stream stays ordered
    return;
  }
  const int wgi = threadIdx.x / 128, wi = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int gr = lane / 4, gc = lane % 4;
  const float scale = g.scale_log2 * kLn2;
  const int first_q = CAUSAL ? static_cast<int>(k0 / BM) : 0;
  const int q_tiles = static_cast<int>((p.n_sel + BM - 1) / BM);

  const wg::StridedRows q_rows = wg::strided_rows(q, p.row0, p.rstride, p.n_sel), do_rows = wg::strided_rows(d_o, p.row0, p.rstride, p.n_sel);
  // threads 0 .. BM - 1 copy L of row threadIdx.x of each tile, the next BM threads its Dsum
  const float* my_row_value = (threadIdx.x < BM ? lse : dsum) + p.row0 + (threadIdx.x % BM) * p.rstride;
  auto load_rows = [&](int j, int buf) {
    const int64_t m0 = int64_t(j) * BM;
    wg::load_rows_sw128<BM, T>(qs + buf * TB, q_rows, m0);
    wg::load_rows_sw128<BM, T>(dos + buf * TB, do_rows, m0);
    if (threadIdx.x < 2 * BM) {
      const bool valid = m0 + threadIdx.x % BM < p.n_sel;
      cp_async4(lrow + buf * 2 * BM + threadIdx.x, valid ? my_row_value + m0 * p.rstride : lse, valid);
    }
  };

  wg::load_rows_sw128<BN, T>(ks, k, p.row0, p.rstride, p.n_sel, k0);
  wg::load_rows_sw128<BN, T>(vs, v, p.row0, p.rstride, p.n_sel, k0);
  load_rows(first_q, 0);
  cp_async_commit();

  const uint32_t k_addr = smem_address(ks), v_addr = smem_address(vs), q_addr = smem_address(qs), do_addr = smem_address(dos),
                 ds_addr = smem_address(dst);
  const uint32_t my_k = k_addr + wgi * TB, my_v = v_addr + wgi * TB;  // this warpgroup's 64 keys

  float dk_acc[32], dv_acc[32];
#pragma unroll
  for (int i = 0; i < 32; i++) dk_acc[i] = dv_acc[i] = 0.0f;
  float dqa[DQN / 2];

  // dQ of the tile at m0 (in dqa once its group has completed) into dq.
  auto add_dq = [&](int64_t m0) {
    if (C::kStage && dq_mode == kDqBulk) {
#pragma unroll
      for (int r = 0; r < 2; r++)
#pragma unroll
        for (int n = 0; n < DQN / 8; n++)
          *reinterpret_cast<float2*>(stage + (wi * 16 + gr + 8 * r) * C::kStagePitch + n * 8 + 2 * gc) =
              make_float2(dqa[4 * n + 2 * r] * scale, dqa[4 * n + 2 * r + 1] * scale);
      wg::fence_proxy_async();
      __syncthreads();
      if (threadIdx.x < BM) {
        const int64_t t = m0 + threadIdx.x;
        if (t < p.n_sel) bulk_reduce_add(dq + (p.row0 + t * p.rstride) * D, stage + threadIdx.x * C::kStagePitch, DQN * sizeof(float));
        bulk_commit();
      }
      return;
    }
    if (dq_mode == kDqRed4) {
      // Lanes c and c ^ 1 swap halves: even lanes add four columns of row g, odd lanes of row g + 8. Each
      // add follows its exchange (adds grouped after all the exchanges were 5% slower: a burst of them).
      const bool odd = gc & 1;
      const int64_t t = m0 + wi * 16 + gr + (odd ? 8 : 0);
      float* out = dq + (p.row0 + t * p.rstride) * D + wgi * DQN + 2 * (gc & ~1);
#pragma unroll
      for (int n = 0; n < DQN / 8; n++) {
        const float sx = odd ? dqa[4 * n] : dqa[4 * n + 2], sy = odd ? dqa[4 * n + 1] : dqa[4 * n + 3];
        const float rx = __shfl_xor_sync(0xffffffffu, sx, 1), ry = __shfl_xor_sync(0xffffffffu, sy, 1);
        const float4 val = odd ? make_float4(rx, ry, dqa[4 * n + 2], dqa[4 * n + 3]) : make_float4(dqa[4 * n], dqa[4 * n + 1], rx, ry);
        if (t < p.n_sel) add_quad(out + n * 8, val.x * scale, val.y * scale, val.z * scale, val.w * scale);
      }
    } else {
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int64_t t = m0 + wi * 16 + gr + 8 * r;
        if (t >= p.n_sel) continue;
        float* out = dq + (p.row0 + t * p.rstride) * D + wgi * DQN + 2 * gc;
#pragma unroll
        for (int n = 0; n < DQN / 8; n++) add_pair(out + n * 8, dqa[4 * n + 2 * r] * scale, dqa[4 * n + 2 * r + 1] * scale);
      }
    }
  };

  // dQ = dS K from the dS^T tile at ds: this warpgroup's DQN columns of D over all BN keys (dS^T and K
  // MN-major), one group.
  auto issue_dq = [&](uint32_t ds) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      const uint64_t a = wg::desc_mnmajor(ds + kk * 2048), b = wg::desc_mnmajor(k_addr + kk * 2048 + wgi * DQN * 2);
      if constexpr (DQN == 64) wg::mma_ss_n64<1, 1>(dqa, a, b, kk);
      else wg::mma_ss_n32<1, 1>(dqa, a, b, kk);
    }
    wg::commit();
  };

  for (int j = first_q; j < q_tiles; j++) {
    const int buf = (j - first_q) & 1;
    if (C::kStage && dq_mode == kDqBulk && threadIdx.x < BM) bulk_wait_read();  // the dQ stage is free again
    if constexpr (PIPE) {
      // Everyone is past the previous tile, so its buffers are free for tile j + 1.
      cp_async_wait<0>();
      wg::fence_proxy_async();
      __syncthreads();
      if (j + 1 < q_tiles) {
        load_rows(j + 1, buf ^ 1);
        cp_async_commit();
      }
    } else {
      if (j + 1 < q_tiles) {
        load_rows(j + 1, buf ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      wg::fence_proxy_async();
      __syncthreads();
    }
    const uint32_t qt = q_addr + buf * TB, dot = do_addr + buf * TB;
    const uint32_t ds_buf = ds_addr + (PIPE ? buf : 0) * NWG * TB;
    unsigned char* ds_tile = dst + (PIPE ? buf : 0) * NWG * TB;
    const float* lr = lrow + buf * 2 * BM;
    const float* dr = lr + BM;
    const int64_t m0 = int64_t(j) * BM;

    // S^T = K Q^T, then dP^T = V dO^T, in two groups so that P is computed while dP is still running.
    float s[32], dp[32];
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) wg::mma_ss_n64<0, 0>(s, wg::desc_kmajor(my_k + kk * 32), wg::desc_kmajor(qt + kk * 32), kk);
    wg::commit();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) wg::mma_ss_n64<0, 0>(dp, wg::desc_kmajor(my_v + kk * 32), wg::desc_kmajor(dot + kk * 32), kk);
    wg::commit();
    // With PIPE the previous tile's dQ runs behind S and dP. Its group is issued on the first tile too
    // (from a buffer not yet written, the result unused), so that every wait below counts the same groups.
    if constexpr (PIPE) issue_dq(ds_addr + (buf ^ 1) * NWG * TB);
    wg::wait<PIPE ? 2 : 1>();
    wg::fence_operand(s);

    const int key_row = wgi * 64 + wi * 16 + gr;  // block-relative key of accumulator rows e < 2 (+8 for e >= 2)
    if (k0 + BN > p.n_sel || (CAUSAL && m0 < k0 + BN)) {
      const int key_end = static_cast<int>(min(p.n_sel - k0, int64_t(BN)));
      const int q_off = static_cast<int>(m0 - k0);
#pragma unroll
      for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int c = n * 8 + 2 * gc + (e & 1);
          const int key = key_row + 8 * (e / 2);
          const bool keep = key < key_end && !(CAUSAL && key > q_off + c);
          s[4 * n + e] = keep ? exp2_ftz(fmaf(s[4 * n + e], g.scale_log2, -lr[c] * kLog2e)) : 0.0f;
        }
    } else {
#pragma unroll
      for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[4 * n + e] = exp2_ftz(fmaf(s[4 * n + e], g.scale_log2, -lr[n * 8 + 2 * gc + (e & 1)] * kLog2e));
    }
    uint32_t ap[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      ap[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
      ap[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      ap[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      ap[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
    wg::wait<PIPE ? 1 : 0>();
    wg::fence_operand(dp);
    uint32_t as[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
      for (int h = 0; h < 4; h++) {
        const int n = 2 * kk + h / 2, e0 = 2 * (h % 2);  // register pair h: tile n, rows e0 / 2
        const int c = n * 8 + 2 * gc;
        as[kk][h] = pack_bf16(s[4 * n + e0] * (dp[4 * n + e0] - dr[c]), s[4 * n + e0 + 1] * (dp[4 * n + e0 + 1] - dr[c + 1]));
      }

    // dV += P^T dO, dK += dS^T Q (dO and Q MN-major: queries are the reduced index).
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < BM / 16; kk++) wg::mma_rs_n64<1>(dv_acc, ap[kk], wg::desc_mnmajor(dot + kk * 2048));
#pragma unroll
    for (int kk = 0; kk < BM / 16; kk++) wg::mma_rs_n64<1>(dk_acc, as[kk], wg::desc_mnmajor(qt + kk * 2048));
    wg::commit();

    // dS^T to shared memory ([key][query], swizzled) while those run: as[kk] is four 8 x 8 matrices (rows
    // g and g + 8, query columns 16kk + 2c and 16kk + 8 + 2c), one stmatrix; lane l gives the address of
    // row l % 8 of matrix l / 8.
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      const int row = wgi * 64 + wi * 16 + lane % 8 + 8 * ((lane / 8) % 2), chunk = 2 * kk + lane / 16;
      wg::store_matrices(smem_address(ds_tile) + wg::swz(row, chunk), as[kk]);
    }
    wg::fence_proxy_async();
    if constexpr (PIPE) {  // the previous tile's dQ into dq while dV and dK run
      wg::wait<1>();
      wg::fence_operand(dqa);
      if (j > first_q) add_dq(m0 - BM);
    }
    wg::wait<0>();
    wg::fence_operand(dv_acc);
    wg::fence_operand(dk_acc);

    if constexpr (!PIPE) {
      __syncthreads();
      wg::fence();
      issue_dq(ds_buf);
      wg::wait<0>();
      wg::fence_operand(dqa);
      add_dq(m0);
    }
  }
  if (PIPE && q_tiles > first_q) {
    __syncthreads();
    wg::fence();
    issue_dq(ds_addr + ((q_tiles - 1 - first_q) & 1) * NWG * TB);
    wg::wait<0>();
    wg::fence_operand(dqa);
    add_dq(int64_t(q_tiles - 1) * BM);
  }
  if (C::kStage && dq_mode == kDqBulk && threadIdx.x < BM) bulk_wait_all();

  wait_for_previous_grid();
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int64_t key = k0 + wgi * 64 + wi * 16 + gr + 8 * r;
    if (key >= p.n_sel) continue;
    const int64_t offset = (p.row0 + key * p.rstride) * D + 2 * gc;
#pragma unroll
    for (int n = 0; n < 8; n++)
      store_key_grads(dk + offset + n * 8, dv + offset + n * 8, dk_acc[4 * n + 2 * r] * scale, dk_acc[4 * n + 2 * r + 1] * scale,
                      dv_acc[4 * n + 2 * r], dv_acc[4 * n + 2 * r + 1], fresh);
  }
#endif
}

// The wgmma kernel's shape: LONGNET_FLASH_BACKWARD=wg2 (two warpgroups a block), wg1x2 / wg1x3 (one
// warpgroup, two or three blocks an SM), wg2p / wg1x2p (the same pipelined). Default wg2p: its 128-key
// blocks add half the dq atomics of wg1x3, which in a training step (the card at its power limit) is worth
// 1% of the step (bench/RESULTS.md, 2026-11-29), and alone it is as fast as wg1x3 from 128K on (within 3%
// at 32K and 64K). Both pass the full checks on an H200 (native/README.md).
int wgmma_backward_variant() {
  static const int variant = [] {
    const char* env = std::getenv("LONGNET_FLASH_BACKWARD");
    if (!env) return 4;
    const char* names[] = {"wg2", "wg1x2", "wg1x3", "wg2p", "wg1x2p"};
    for (int i = 0; i < 5; i++)
      if (std::strcmp(env, names[i]) == 0) return i + 1;
    return 4;
  }();
  return variant;
}

// Whether the wgmma backward runs: the sm_90a image of this file is the one loaded (a device of compute
// capability 9.0), unless LONGNET_FLASH_BACKWARD=mma asks for the mma.sync kernel.
bool use_wgmma_backward() {
  static const bool built = wg::image_has_wgmma();
  const char* env = std::getenv("LONGNET_FLASH_BACKWARD");
  return built && !(env && std::strcmp(env, "mma") == 0);
}
}  // namespace
}  // namespace flash

void launch_flash_attention_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                     const __nv_bfloat16* d_o, const float* lse, const float* dsum, float* dq, float* dk, float* dv,
                                     const AttentionShape& sh, const AttentionOptions& opt, cudaStream_t s) {
  const int64_t rows = sh.batch * sh.seq * sh.heads;
  if (rows == 0) return;
  const size_t bytes = size_t(rows) * sh.head_dim * sizeof(float);
  // dq takes atomic adds from every key block; dk and dv are written whole by a first pattern of
  // dilation 1 (every row a key of one block), so only other schedules clear them first.
  const bool fresh = !opt.patterns.empty() && opt.patterns[0].dilation == 1;
  check_cuda(cudaMemsetAsync(dq, 0, bytes, s), "cudaMemsetAsync");
  if (!fresh)
    for (float* grad : {dk, dv}) check_cuda(cudaMemsetAsync(grad, 0, bytes, s), "cudaMemsetAsync");
  if (sh.head_dim == 64 && flash::use_wgmma_backward()) {
    const char* dq_env = std::getenv("LONGNET_FLASH_DQ");
    const int dq_mode = dq_env && std::strcmp(dq_env, "red2") == 0   ? flash::kDqRed2
                        : dq_env && std::strcmp(dq_env, "bulk") == 0 ? flash::kDqBulk
                                                                     : flash::kDqRed4;
    auto run = [&]<int NWG, int MINB, bool PIPE>() {
      using C = flash::WgConfig<NWG, MINB, PIPE>;
      auto kernel = opt.causal ? flash::backward_wgmma_kernel<true, NWG, MINB, PIPE> : flash::backward_wgmma_kernel<false, NWG, MINB, PIPE>;
      allow_dynamic_smem(reinterpret_cast<const void*>(kernel), C::kSmem, "fused dilated attention backward (wgmma)");
      for (size_t i = 0; i < opt.patterns.size(); i++) {
        const PatternGeom g = make_geom(sh, opt.patterns[i], opt, C::kKeys);
        const int64_t blocks = g.group * g.tiles;
        if (blocks > INT32_MAX) fail("fused dilated attention backward: too many blocks");
        // each pattern after the first may start beside its predecessor's last blocks
        launch_overlapping(i > 0, kernel, static_cast<unsigned>(blocks), C::kThreads, C::kSmem, s, q, k, v, d_o, lse, dsum, dq, dk, dv, g,
                           dq_mode, fresh && i == 0);
        check_launch("fused dilated attention backward kernel (wgmma)");
      }
    };
    switch (flash::wgmma_backward_variant()) {
      case 1: run.template operator()<2, 1, false>(); break;
      case 2: run.template operator()<1, 2, false>(); break;
      case 3: run.template operator()<1, 3, false>(); break;
      case 5: run.template operator()<1, 2, true>(); break;
      default: run.template operator()<2, 1, true>(); break;
    }
    return;
  }
  flash::dispatch_flash(sh.head_dim, opt.causal, [&]<int D, bool CAUSAL>() {
    constexpr size_t smem = flash::backward_smem<D>();
    auto kernel = flash::backward_kernel<D, CAUSAL>;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "fused dilated attention backward");
    for (size_t i = 0; i < opt.patterns.size(); i++) {
      const PatternGeom g = make_geom(sh, opt.patterns[i], opt, flash::kBlockKeys);
      const int64_t blocks = g.group * g.tiles;
      if (blocks > INT32_MAX) fail("fused dilated attention backward: too many blocks");
      kernel<<<static_cast<unsigned>(blocks), flash::BackwardConfig<D>::kThreads, smem, s>>>(q, k, v, d_o, lse, dsum, dq, dk, dv, g,
                                                                                            fresh && i == 0);
      check_launch("fused dilated attention backward kernel");
    }
  });
}

}  // namespace ln
