// Bindings: dilated attention forward and backward.
#include "../device.h"
#include "../kernels/attention.h"
#include "attention_args.h"
#include "js.h"

namespace ln::js {

namespace {

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
