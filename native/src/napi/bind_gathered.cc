// Bindings: packed (varlen) attention forward and backward, and the merge of partial results.
#include "../device.h"
#include "../kernels/attention_gathered.h"
#include "js.h"

namespace ln::js {

namespace {

// Arguments from `first`: qOffsets, kOffsets, tiles (int32 device buffers), headDim, causal, scale.
GatheredArgs read_args(const Call& c, size_t first, int64_t& groups) {
  Buffer *qo = c.buffer(first, "qOffsets"), *ko = c.buffer(first + 1, "kOffsets"), *tiles = c.buffer(first + 2, "tiles");
  GatheredArgs a{};
  const int64_t dim = c.integer(first + 3, "headDim");
  a.causal = c.boolean(first + 4, "causal");
  a.scale = static_cast<float>(c.number(first + 5, "scale"));
  if (dim < 1 || dim > 256) throw RangeError("gathered attention on CUDA supports headDim 1 to 256, got " + std::to_string(dim));
  if (qo->dtype != DType::I32 || ko->dtype != DType::I32 || tiles->dtype != DType::I32) {
    throw RangeError("gathered attention: offsets and tiles must be int32");
  }
  if (qo->size < 1 || ko->size != qo->size) throw RangeError("gathered attention: offsets of different lengths");
  if (tiles->size % 2) throw RangeError("gathered attention: tiles must be (group, row) pairs");
  groups = qo->size - 1;
  a.q_offsets = qo->as<int32_t>();
  a.k_offsets = ko->as<int32_t>();
  a.tiles = tiles->as<int32_t>();
  a.tile_count = tiles->size / 2;
  a.head_dim = static_cast<int>(dim);
  return a;
}

napi_value forward(const Call& c) {
  Buffer *q = c.buffer(0, "q"), *k = c.buffer(1, "k"), *v = c.buffer(2, "v"), *o = c.buffer(3, "o"), *lse = c.buffer(4, "lse");
  int64_t groups = 0;
  const GatheredArgs a = read_args(c, 5, groups);
  const int64_t rows_q = lse->size;
  expect(q, DType::F32, rows_q * a.head_dim, "gathered attention q");
  expect(o, DType::F32, rows_q * a.head_dim, "gathered attention o");
  expect(lse, DType::F32, rows_q, "gathered attention lse");
  if (k->dtype != DType::F32 || k->size % a.head_dim) throw RangeError("gathered attention: k must be float32 [rows, headDim]");
  expect(v, DType::F32, k->size, "gathered attention v");
  launch_gathered_forward(q->as<float>(), k->as<float>(), v->as<float>(), o->as<float>(), lse->as<float>(), a, stream());
  return undefined(c.env);
}

napi_value backward(const Call& c) {
  Buffer *q = c.buffer(0, "q"), *k = c.buffer(1, "k"), *v = c.buffer(2, "v"), *lse = c.buffer(3, "lse"), *dsum = c.buffer(4, "dsum");
  Buffer *d_o = c.buffer(5, "dO"), *dq = c.buffer(6, "dq"), *dk = c.buffer(7, "dk"), *dv = c.buffer(8, "dv");
  int64_t groups = 0;
  const GatheredArgs a = read_args(c, 9, groups);
  Buffer* k_tiles = c.buffer(15, "keyTiles");
  if (k_tiles->dtype != DType::I32 || k_tiles->size % 2) throw RangeError("gathered attention: key tiles must be int32 pairs");
  const int64_t rows_q = lse->size, n_q = rows_q * a.head_dim;
  if (k->dtype != DType::F32 || k->size % a.head_dim) throw RangeError("gathered attention: k must be float32 [rows, headDim]");
  for (auto [b, name] : {std::pair{q, "gathered attention q"}, {d_o, "gathered attention dO"}, {dq, "gathered attention dq"}}) {
    expect(b, DType::F32, n_q, name);
  }
  for (auto [b, name] : {std::pair{v, "gathered attention v"}, {dk, "gathered attention dk"}, {dv, "gathered attention dv"}}) {
    expect(b, DType::F32, k->size, name);
  }
  expect(lse, DType::F32, rows_q, "gathered attention lse");
  expect(dsum, DType::F32, rows_q, "gathered attention dsum");
  launch_gathered_backward(q->as<float>(), k->as<float>(), v->as<float>(), lse->as<float>(), dsum->as<float>(), d_o->as<float>(),
                           dq->as<float>(), dk->as<float>(), dv->as<float>(), a, k_tiles->as<int32_t>(), k_tiles->size / 2, stream());
  return undefined(c.env);
}

napi_value merge(const Call& c) {
  Buffer *acc_o = c.buffer(0, "accO"), *acc_lse = c.buffer(1, "accLse"), *o = c.buffer(2, "o"), *lse = c.buffer(3, "lse");
  Buffer* rows = c.buffer(4, "rows");
  const int64_t dim = c.integer(5, "headDim");
  if (dim < 1) throw RangeError("mergeAttention: headDim must be positive");
  if (rows->dtype != DType::I32) throw RangeError("mergeAttention: rows must be int32");
  expect(acc_o, DType::F32, acc_lse->size * dim, "mergeAttention accO");
  expect(acc_lse, DType::F32, acc_lse->size, "mergeAttention accLse");
  expect(o, DType::F32, rows->size * dim, "mergeAttention o");
  expect(lse, DType::F32, rows->size, "mergeAttention lse");
  launch_merge_attention(acc_o->as<float>(), acc_lse->as<float>(), o->as<float>(), lse->as<float>(), rows->as<int32_t>(), rows->size,
                         acc_lse->size, static_cast<int>(dim), stream());
  return undefined(c.env);
}

const Register reg({
    {"gatheredAttentionForward", entry<forward>},
    {"gatheredAttentionBackward", entry<backward>},
    {"mergeAttention", entry<merge>},
});

}  // namespace

}  // namespace ln::js
