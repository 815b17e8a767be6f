// The geometry arguments shared by the attention bindings (bind_attention.cc, bind_flash.cc).
#pragma once

#include <cmath>
#include <string>

#include "../kernels/attention.h"
#include "js.h"

namespace ln::js {

// Arguments from `first`: batch, seq, heads, headDim, patterns [w0, r0, w1, r1, ...], causal, scale, blocked.
inline void read_geometry(const Call& c, size_t first, AttentionShape& sh, AttentionOptions& opt) {
  sh.batch = c.integer(first, "batch");
  sh.seq = c.integer(first + 1, "seqLen");
  const int64_t heads = c.integer(first + 2, "heads"), dim = c.integer(first + 3, "headDim");
  const Dims flat = c.dims(first + 4, "patterns");
  opt.causal = c.boolean(first + 5, "causal");
  opt.scale = static_cast<float>(c.number(first + 6, "scale"));
  opt.blocked_offsets = c.boolean(first + 7, "blocked");
  if (sh.batch < 0 || sh.seq < 0 || heads < 1 || dim < 1) throw RangeError("dilated attention: invalid geometry");
  if (heads > INT32_MAX || dim > kMaxHeadDim) {
    throw RangeError("dilated attention on CUDA supports headDim up to " + std::to_string(kMaxHeadDim) + ", got " + std::to_string(dim));
  }
  sh.heads = static_cast<int>(heads);
  sh.head_dim = static_cast<int>(dim);
  if (flat.empty() || flat.size() % 2) throw RangeError("dilated attention: patterns must be [w0, r0, w1, r1, ...]");
  for (size_t i = 0; i < flat.size(); i += 2) {
    if (flat[i] < 1 || flat[i + 1] < 1 || flat[i + 1] > flat[i]) throw RangeError("dilated attention: invalid pattern");
    opt.patterns.push_back({flat[i], flat[i + 1]});
  }
  if (!std::isfinite(opt.scale)) throw RangeError("dilated attention: scale must be finite");
}

}  // namespace ln::js
