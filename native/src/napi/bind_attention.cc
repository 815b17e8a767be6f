// Bindings: dilated attention forward and backward.
#include <cmath>

#include "../device.h"
#include "../kernels/attention.h"
#include "js.h"

namespace ln::js {

namespace {

// Arguments from `first`: batch, seq, heads, headDim, patterns [w0, r0, w1, r1, ...], causal, scale, blocked.
void read_geometry(const Call& c, size_t first, AttentionShape& sh, AttentionOptions& opt) {
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

napi_value forward(const Call& c) {
  Buffer *q = c.buffer(0, "q"), *k = c.buffer(1, "k"), *v = c.buffer(2, "v"), *o = c.buffer(3, "o"), *lse = c.buffer(4, "lse");
  AttentionShape sh{};
  AttentionOptions opt{};
  read_geometry(c, 5, sh, opt);
  const int64_t rows = sh.batch * sh.seq * sh.heads, n = rows * sh.head_dim;
  expect(q, DType::F32, n, "attention q");
  expect(k, DType::F32, n, "attention k");
  expect(v, DType::F32, n, "attention v");
  expect(o, DType::F32, n, "attention o");
  expect(lse, DType::F32, rows, "attention lse");
  launch_attention_forward(q->as<float>(), k->as<float>(), v->as<float>(), o->as<float>(), lse->as<float>(), sh, opt, stream());
  return undefined(c.env);
}

napi_value backward(const Call& c) {
  Buffer *q = c.buffer(0, "q"), *k = c.buffer(1, "k"), *v = c.buffer(2, "v"), *o = c.buffer(3, "o"), *lse = c.buffer(4, "lse");
  Buffer *d_o = c.buffer(5, "dO"), *dq = c.buffer(6, "dq"), *dk = c.buffer(7, "dk"), *dv = c.buffer(8, "dv");
  AttentionShape sh{};
  AttentionOptions opt{};
  read_geometry(c, 9, sh, opt);
  const int64_t rows = sh.batch * sh.seq * sh.heads, n = rows * sh.head_dim;
  for (auto [b, name] : {std::pair{q, "attention q"}, {k, "attention k"}, {v, "attention v"}, {o, "attention o"}, {d_o, "attention dO"},
                         {dq, "attention dq"}, {dk, "attention dk"}, {dv, "attention dv"}}) {
    expect(b, DType::F32, n, name);
  }
  expect(lse, DType::F32, rows, "attention lse");
  launch_attention_backward(q->as<float>(), k->as<float>(), v->as<float>(), o->as<float>(), lse->as<float>(), d_o->as<float>(),
                            dq->as<float>(), dk->as<float>(), dv->as<float>(), sh, opt, stream());
  return undefined(c.env);
}

const Register reg({
    {"attentionForward", entry<forward>},
    {"attentionBackward", entry<backward>},
});

}  // namespace

}  // namespace ln::js
