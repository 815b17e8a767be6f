// Fused forward on tensor cores: one launch per pattern. A block takes 128 selected query rows of one
// (batch, head, segment) (64 at head dim 128); its four warps own 32 (16) rows each and stream the
// segment's selected keys through shared memory (double-buffered cp.async tiles read straight from
// [B, N, H, D] with row stride r*H*D), with S = Q K^T and O += P V on bf16 mma and an online softmax in fp32 registers.
// At the end each row is merged into the fp32 output and L through the log-sum-exp:
//   L' = logaddexp(L, lse_i),  O' = O exp(L - L') + O_i exp(lse_i - L').
// Within a launch every row belongs to one block, and patterns run in order, so the merge needs no
// atomics and the result is deterministic. The same kernel runs packed problems (queries and keys from
// different buffers, as sequence parallelism gathers them) and writes fp32 or bf16 outputs.
// At head dim 64 on Hopper, flash_attention_forward_sm90.cuh's wgmma kernel does the same work instead.
#include "flash_attention.h"

#include <cstdlib>
#include <string>

#include "../device.h"
#include "../memory.h"
#include "elementwise.h"
#include "flash_attention_mma.cuh"
#include "flash_attention_forward_sm90.cuh"
#include "flash_forward_work.cuh"

namespace ln {

namespace flash {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

// Query rows per warp: 32 (two m-tiles sharing every K and V fragment) where the registers allow it.
template <int D>
constexpr int kMTiles = D <= 64 ? 2 : 1;
template <int D>
constexpr int kQueryTile = 16 * kMTiles<D> * kWarps;

template <int D>
constexpr size_t forward_smem() {
  return sizeof(bf16) * size_t(kQueryTile<D> + 4 * kKeyTile) * (D + kPad);  // q, and two buffers each of k and v
}

template <int D, bool CAUSAL, typename OutT, typename Source>
__global__ void __launch_bounds__(kThreads) forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                           const bf16* __restrict__ v, OutT* __restrict__ o, float* __restrict__ lse,
                                                           Source source, float scale_log2) {
  constexpr int MT = kMTiles<D>;
  constexpr int BM = kQueryTile<D>;
  constexpr int BN = kKeyTile;
  constexpr int LD = D + kPad;
  constexpr int KD = D / 16;  // k-steps of Q K^T
  constexpr int NS = BN / 8;  // 8-column tiles of S
  constexpr int NO = D / 8;   // 8-column tiles of O
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  bf16* qs = reinterpret_cast<bf16*>(smem_bytes);
  bf16* ks = qs + BM * LD;
  bf16* vs = ks + 2 * BN * LD;

  const ForwardWork w = source(blockIdx.x);
  const int64_t q0 = int64_t(w.tile) * BM;
  if (q0 >= w.q.n) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t warp_q0 = q0 + warp * 16 * MT;
  const int64_t kv_end = CAUSAL ? max(int64_t(0), min(w.k.n, q0 + BM + w.shift)) : w.k.n;
  const int key_tiles = static_cast<int>((kv_end + BN - 1) / BN);
  if (key_tiles == 0) return;  // no query of the tile sees a key: its rows keep what they hold

  load_tile_async<D, BM, kThreads>(qs, q, w.q.row0, w.q.stride, w.q.n, q0);
  load_tile_async<D, BN, kThreads>(ks, k, w.k.row0, w.k.stride, w.k.n, 0);
  load_tile_async<D, BN, kThreads>(vs, v, w.k.row0, w.k.stride, w.k.n, 0);
  cp_async_commit();

  uint32_t qf[MT][KD][4];
  float acc[MT][NO][4];
  float row_m[MT][2], row_l[MT][2];  // running max (log2 units) and this lane's share of the sum, rows g and g+8
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int n = 0; n < NO; n++) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.0f;
    row_m[mt][0] = row_m[mt][1] = -INFINITY;
    row_l[mt][0] = row_l[mt][1] = 0.0f;
  }

  for (int j = 0; j < key_tiles; j++) {
    const int buf = j & 1;
    const int64_t k0 = int64_t(j) * BN;
    if (j + 1 < key_tiles) {
      load_tile_async<D, BN, kThreads>(ks + (buf ^ 1) * BN * LD, k, w.k.row0, w.k.stride, w.k.n, k0 + BN);
      load_tile_async<D, BN, kThreads>(vs + (buf ^ 1) * BN * LD, v, w.k.row0, w.k.stride, w.k.n, k0 + BN);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kk = 0; kk < KD; kk++) load_a(qf[mt][kk], qs, LD, warp * 16 * MT + mt * 16, kk * 16);
    }
    // A causal warp whose rows all precede this key tile has nothing to do here.
    if (!(CAUSAL && k0 > warp_q0 + 16 * MT - 1 + w.shift)) {
      const bf16* kt = ks + buf * BN * LD;
      const bf16* vt = vs + buf * BN * LD;

      float s[MT][NS][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int n = 0; n < NS; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KD; kk++) {
#pragma unroll
        for (int n = 0; n < NS; n += 2) {
          uint32_t b[4];
          load_b_rows(b, kt, LD, n * 8, kk * 16);
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            mma(s[mt][n], qf[mt][kk], b[0], b[1]);
            mma(s[mt][n + 1], qf[mt][kk], b[2], b[3]);
          }
        }
      }

      // Keys past the end, or (causal) past the diagonal, only in the block's last tiles.
      if (k0 + BN > w.k.n || (CAUSAL && k0 + BN - 1 > q0 + w.shift)) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int n = 0; n < NS; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              const int64_t tk = k0 + n * 8 + 2 * (lane % 4) + (e & 1);
              const int64_t tq = warp_q0 + mt * 16 + lane / 4 + 8 * (e / 2);
              if (tk >= w.k.n || (CAUSAL && tk > tq + w.shift)) s[mt][n][e] = -INFINITY;
            }
      }

#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
          float mx = -INFINITY;
#pragma unroll
          for (int n = 0; n < NS; n++) mx = fmaxf(mx, fmaxf(s[mt][n][2 * r], s[mt][n][2 * r + 1]));
          const float m_new = fmaxf(row_m[mt][r], quad_max(mx) * scale_log2);
          const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet: no NaN
          alpha[r] = exp2f(row_m[mt][r] - m_use);
          row_m[mt][r] = m_new;
          float sum = 0.0f;
#pragma unroll
          for (int n = 0; n < NS; n++) {
            s[mt][n][2 * r] = exp2f(fmaf(s[mt][n][2 * r], scale_log2, -m_use));
            s[mt][n][2 * r + 1] = exp2f(fmaf(s[mt][n][2 * r + 1], scale_log2, -m_use));
            sum += s[mt][n][2 * r] + s[mt][n][2 * r + 1];
          }
          row_l[mt][r] = row_l[mt][r] * alpha[r] + sum;
        }
#pragma unroll
        for (int n = 0; n < NO; n++) {
          acc[mt][n][0] *= alpha[0];
          acc[mt][n][1] *= alpha[0];
          acc[mt][n][2] *= alpha[1];
          acc[mt][n][3] *= alpha[1];
        }
      }

#pragma unroll
      for (int kk = 0; kk < BN / 16; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) c_to_a(a[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
        for (int n = 0; n < NO; n += 2) {
          uint32_t b[4];
          load_b_cols(b, vt, LD, n * 8, kk * 16);
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            mma(acc[mt][n], a[mt], b[0], b[1]);
            mma(acc[mt][n + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // the next iteration's loads overwrite the buffer read here
  }

  // Merge this lane's rows into O and L. Every lane of a quad reads the old L before one writes it.
  float l[MT][2], old_l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int64_t t = warp_q0 + mt * 16 + lane / 4 + 8 * r;
      l[mt][r] = quad_sum(row_l[mt][r]);
      old_l[mt][r] = t < w.q.n ? lse[w.q.row0 + t * w.q.stride] : 0.0f;
    }
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int64_t t = warp_q0 + mt * 16 + lane / 4 + 8 * r;
      if (t >= w.q.n || l[mt][r] == 0.0f) continue;  // past the end, or no visible key
      const int64_t row = w.q.row0 + t * w.q.stride;
      const float lse_i = (row_m[mt][r] + log2f(l[mt][r])) * kLn2;
      const float hi = fmaxf(old_l[mt][r], lse_i), lo = fminf(old_l[mt][r], lse_i);
      const float l_new = hi + log1pf(expf(lo - hi));
      const float w_old = expf(old_l[mt][r] - l_new);
      const float w_new = expf(lse_i - l_new) / l[mt][r];
      OutT* out = o + row * D + 2 * (lane % 4);
#pragma unroll
      for (int n = 0; n < NO; n++) {
        const float x = ldf(out[n * 8]) * w_old + acc[mt][n][2 * r] * w_new;
        const float y = ldf(out[n * 8 + 1]) * w_old + acc[mt][n][2 * r + 1] * w_new;
        store_pair(out + n * 8, x, y);
      }
      if (lane % 4 == 0) lse[row] = l_new;
    }
}

}  // namespace
}  // namespace flash

namespace {

// Calls f.template operator()<D, CAUSAL, OutT>() for the head dimension, mask and output type.
template <typename F>
void dispatch_forward(int dim, bool causal, DType o_type, F&& f) {
  if (o_type != DType::F32 && o_type != DType::BF16) throw RangeError("fused dilated attention: o must be float32 or bfloat16");
  flash::dispatch_flash(dim, causal, [&]<int D, bool CAUSAL>() {
    if (o_type == DType::F32) return f.template operator()<D, CAUSAL, float>();
    return f.template operator()<D, CAUSAL, flash::bf16>();
  });
}

// Whether the wgmma kernel runs at head dim `dim`: D = 64 on a Hopper GPU whose loaded image is sm_90a,
// unless LONGNET_FLASH_FORWARD=mma asks for the mma.sync kernel (to compare them).
bool use_wgmma(int dim) {
  static const bool built = flash::wg::image_has_wgmma();
  if (dim != 64 || !built) return false;
  const char* env = std::getenv("LONGNET_FLASH_FORWARD");
  return !(env && std::string(env) == "mma");
}

// Zero output and -inf log-sum-exp: what merging starts from.
void clear_output(void* o, DType o_type, float* lse, int64_t rows, int dim, cudaStream_t s) {
  check_cuda(cudaMemsetAsync(o, 0, size_t(rows) * dim * dtype_size(o_type), s), "cudaMemsetAsync");
  launch_fill(lse, DType::F32, -INFINITY, rows, s);
}

}  // namespace

void launch_flash_attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, void* o, DType o_type,
                                    float* lse, const AttentionShape& sh, const AttentionOptions& opt, bool accumulate,
                                    cudaStream_t s) {
  const int64_t rows = sh.batch * sh.seq * sh.heads;
  if (rows == 0) return;
  if (use_wgmma(sh.head_dim)) {
    // A first pattern of dilation 1 selects every row, and every row sees a key: it writes o and lse
    // afresh, with no clearing before it.
    const bool fresh = !accumulate && !opt.patterns.empty() && opt.patterns[0].dilation == 1;
    if (!accumulate && !fresh) clear_output(o, o_type, lse, rows, sh.head_dim, s);
    dispatch_forward(64, opt.causal, o_type, [&]<int D, bool CAUSAL, typename OutT>() {
      if constexpr (D == 64) {
        auto merging = flash::sm90::forward_kernel<CAUSAL, false, OutT, flash::PatternSource>;
        auto writing = flash::sm90::forward_kernel<CAUSAL, true, OutT, flash::PatternSource>;
        constexpr size_t smem = flash::sm90::kSmem;
        allow_dynamic_smem(reinterpret_cast<const void*>(merging), smem, "fused dilated attention forward (wgmma)");
        allow_dynamic_smem(reinterpret_cast<const void*>(writing), smem, "fused dilated attention forward (wgmma)");
        // each pattern after the first starts on the SMs its predecessor's last blocks leave idle (a small
        // grid's causal tail), and waits for that pattern only to merge
        for (size_t i = 0; i < opt.patterns.size(); i++) {
          const PatternGeom g = make_geom(sh, opt.patterns[i], opt, flash::sm90::kQueryTile);
          const int64_t blocks = g.group * g.tiles;
          if (blocks > INT32_MAX) fail("fused dilated attention forward: too many blocks");
          launch_overlapping(i > 0, fresh && i == 0 ? writing : merging, static_cast<unsigned>(blocks), flash::sm90::kThreads, smem, s,
                             q, k, v, static_cast<OutT*>(o), lse, flash::PatternSource{g}, g.scale_log2);
          check_launch("fused dilated attention forward kernel (wgmma)");
        }
      }
    });
    return;
  }
  if (!accumulate) clear_output(o, o_type, lse, rows, sh.head_dim, s);
  dispatch_forward(sh.head_dim, opt.causal, o_type, [&]<int D, bool CAUSAL, typename OutT>() {
    constexpr size_t smem = flash::forward_smem<D>();
    auto kernel = flash::forward_kernel<D, CAUSAL, OutT, flash::PatternSource>;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "fused dilated attention forward");
    for (const auto& pat : opt.patterns) {
      const PatternGeom g = make_geom(sh, pat, opt, flash::kQueryTile<D>);
      const int64_t blocks = g.group * g.tiles;
      if (blocks > INT32_MAX) fail("fused dilated attention forward: too many blocks");
      kernel<<<static_cast<unsigned>(blocks), flash::kThreads, smem, s>>>(q, k, v, static_cast<OutT*>(o), lse, flash::PatternSource{g},
                                                                           g.scale_log2);
      check_launch("fused dilated attention forward kernel");
    }
  });
}

void launch_flash_attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, float* o, float* lse,
                                    const AttentionShape& sh, const AttentionOptions& opt, cudaStream_t s) {
  launch_flash_attention_forward(q, k, v, o, DType::F32, lse, sh, opt, false, s);
}

void launch_flash_problems_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, void* o, DType o_type,
                                   float* lse, const std::vector<FlashProblem>& problems, int head_dim, bool causal, float scale,
                                   cudaStream_t s) {
  if (problems.empty()) return;
  const bool wgmma = use_wgmma(head_dim);
  dispatch_forward(head_dim, causal, o_type, [&]<int D, bool CAUSAL, typename OutT>() {
    static_assert(flash::sm90::kQueryTile == flash::kQueryTile<64>, "both kernels take the same query tiles");
    // (problem, query tile) pairs; causal problems put their last (heaviest) tiles first
    std::vector<int32_t> tiles;
    for (size_t i = 0; i < problems.size(); i++) {
      const int64_t count = ceil_div(problems[i].n_q, flash::kQueryTile<D>);
      for (int64_t t = 0; t < count; t++) {
        tiles.push_back(static_cast<int32_t>(i));
        tiles.push_back(static_cast<int32_t>(CAUSAL ? count - 1 - t : t));
      }
    }
    const int64_t blocks = int64_t(tiles.size()) / 2;
    if (blocks == 0) return;
    if (blocks > INT32_MAX) fail("fused attention forward: too many blocks");
    const size_t problem_bytes = problems.size() * sizeof(FlashProblem), tile_bytes = tiles.size() * sizeof(int32_t);
    const Scratch scratch(problem_bytes + tile_bytes);  // stream-ordered: the next user of this block queues after the kernel
    auto* table = scratch.as<unsigned char>();
    check_cuda(cudaMemcpyAsync(table, problems.data(), problem_bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
    check_cuda(cudaMemcpyAsync(table + problem_bytes, tiles.data(), tile_bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
    const flash::TableSource source{reinterpret_cast<const FlashProblem*>(table), reinterpret_cast<const int32_t*>(table + problem_bytes)};
    if (wgmma) {
      if constexpr (D == 64) {
        auto kernel = flash::sm90::forward_kernel<CAUSAL, false, OutT, flash::TableSource>;
        constexpr size_t smem = flash::sm90::kSmem;
        allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "fused attention forward (wgmma)");
        kernel<<<static_cast<unsigned>(blocks), flash::sm90::kThreads, smem, s>>>(q, k, v, static_cast<OutT*>(o), lse, source,
                                                                                 scale * kLog2e);
        check_launch("fused attention forward kernel (wgmma)");
      }
    } else {
      constexpr size_t smem = flash::forward_smem<D>();
      auto kernel = flash::forward_kernel<D, CAUSAL, OutT, flash::TableSource>;
      allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, "fused attention forward");
      kernel<<<static_cast<unsigned>(blocks), flash::kThreads, smem, s>>>(q, k, v, static_cast<OutT*>(o), lse, source, scale * kLog2e);
      check_launch("fused attention forward kernel");
    }
  });
}

}  // namespace ln
