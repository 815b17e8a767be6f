// What the attention kernels share: the geometry of one pattern and the tile loads.
//
// Under pattern (w, r), head h and segment s select the rows s*w' + o + t*r (t = 0, 1, ...) of the
// segment, o the head's offset. In the [B, N, H, D] layout those rows are a dense tile with a row
// stride of r*H*D elements, so each (batch, head, segment) is an ordinary attention problem over
// n_sel rows, and a kernel block takes one tile of BM of them.
#pragma once

#include <cstdint>

#include "../common.h"
#include "attention.h"

namespace ln {

constexpr int kAttnThreads = 256;  // a 16 x 16 grid of threads over each BM x BM score tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct PatternGeom {
  int64_t n;         // sequence length
  int heads, dim;    // H, D
  int64_t w;         // effective segment length min(w, N)
  int64_t r;         // dilation
  int64_t segments;  // ceil(N / w')
  int64_t group;     // blocks per tile index: batch * heads * segments
  int tiles;         // row tiles per (batch, head, segment)
  int blocked_div;   // 0: offset h mod r; else h / blocked_div (torchscale)
  float scale_log2;  // scale * log2(e): scores live in base 2
  bool causal;
};

inline PatternGeom make_geom(const AttentionShape& sh, const AttentionPattern& p, const AttentionOptions& opt, int tile_rows) {
  PatternGeom g{};
  g.n = sh.seq;
  g.heads = sh.heads;
  g.dim = sh.head_dim;
  g.w = p.segment < sh.seq ? p.segment : sh.seq;
  g.r = p.dilation;
  g.segments = ceil_div(sh.seq, g.w);
  g.group = sh.batch * sh.heads * g.segments;
  g.tiles = static_cast<int>(ceil_div(ceil_div(g.w, g.r), tile_rows));
  g.blocked_div = opt.blocked_offsets ? static_cast<int>(ceil_div(sh.heads, p.dilation)) : 0;
  g.scale_log2 = opt.scale * kLog2e;
  g.causal = opt.causal;
  return g;
}

// The problem a block works on.
struct Problem {
  int tile;
  int64_t row0;     // (token, head) index of selected row 0: element offset row0 * D, lse offset row0
  int64_t rstride;  // between consecutive selected rows, in (token, head) units: r * H
  int64_t n_sel;    // selected rows in this segment for this head
};

// Blocks are ordered tile-major so that, in causal runs, the heaviest tiles start first:
// the last query tiles (forward, dq) or the first key tiles (dk, dv). With problem_major, the tiles of
// one (batch, head, segment) are neighbours instead (heaviest first), so that the blocks running at
// once share their keys or queries in L2.
__device__ __forceinline__ Problem locate(const PatternGeom& g, int64_t block, bool last_tiles_first, bool problem_major = false) {
  const int64_t tile_rank = problem_major ? block % g.tiles : block / g.group;
  int64_t rest = problem_major ? block / g.tiles : block - tile_rank * g.group;
  const int64_t seg = rest % g.segments;
  rest /= g.segments;
  const int h = static_cast<int>(rest % g.heads);
  const int64_t b = rest / g.heads;
  Problem p;
  p.tile = static_cast<int>(last_tiles_first ? g.tiles - 1 - tile_rank : tile_rank);
  const int64_t off = g.blocked_div ? h / g.blocked_div : h % g.r;
  const int64_t start = seg * g.w;
  const int64_t len = min(g.w, g.n - start);
  p.n_sel = len > off ? (len - off + g.r - 1) / g.r : 0;
  p.row0 = (b * g.n + start + off) * g.heads + h;
  p.rstride = g.r * g.heads;
  return p;
}

// Rows t0 .. t0+BM-1 of a selected tile into shared memory [BM][DM + 1], zero beyond n_sel and D.
template <int DM, int BM>
__device__ __forceinline__ void load_rows(float* __restrict__ dst, const float* __restrict__ src, const Problem& p, int dim,
                                          int64_t t0) {
  for (int idx = threadIdx.x; idx < BM * DM; idx += kAttnThreads) {
    const int row = idx / DM, d = idx % DM;
    const int64_t t = t0 + row;
    float v = 0.0f;
    if (t < p.n_sel && d < dim) v = src[(p.row0 + t * p.rstride) * dim + d];
    dst[row * (DM + 1) + d] = v;
  }
}

// Per-row values (lse, Dsum) of rows t0 .. t0+BM-1, `fallback` beyond n_sel.
template <int BM>
__device__ __forceinline__ void load_row_values(float* __restrict__ dst, const float* __restrict__ src, const Problem& p, int64_t t0,
                                                float mul, float fallback) {
  for (int row = threadIdx.x; row < BM; row += kAttnThreads) {
    const int64_t t = t0 + row;
    dst[row] = t < p.n_sel ? src[p.row0 + t * p.rstride] * mul : fallback;
  }
}

// Sum over the 16 threads that share a row of the score tile (consecutive lanes of one warp).
__device__ __forceinline__ float row_sum16(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float row_max16(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Calls f.template operator()<DM, BM>() for the head dimension: the tile shapes the kernels are built for.
template <typename F>
void dispatch_head_dim(int dim, F&& f) {
  if (dim <= 32) return f.template operator()<32, 64>();
  if (dim <= 64) return f.template operator()<64, 64>();
  if (dim <= 128) return f.template operator()<128, 64>();
  if (dim <= 256) return f.template operator()<256, 32>();
  throw RangeError("dilated attention on CUDA supports headDim up to " + std::to_string(kMaxHeadDim) + ", got " +
                   std::to_string(dim));
}

}  // namespace ln
