// Binding: rotary positions over pairs (XPos and rotary embeddings), and the store of a float32 gradient
// that rotates it back with its column sums.
#include "../device.h"
#include "../kernels/gradient_store.h"
#include "../kernels/rotary.h"
#include "js.h"

namespace ln::js {

namespace {

// Arguments 3-6 of both calls: x's shape [outer, positions, inner, dim] around the tables' [positions, dim].
struct PairShape {
  int64_t outer, positions, inner, dim;
  int64_t size() const { return outer * positions * inner * dim; }
};

PairShape pair_shape(const Call& c) {
  return {c.integer(3, "outer"), c.integer(4, "positions"), c.integer(5, "inner"), c.integer(6, "dim")};
}

napi_value rotate_pairs(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  Buffer* cos = c.buffer(1, "cos");
  Buffer* sin = c.buffer(2, "sin");
  const PairShape shape = pair_shape(c);
  const auto [outer, positions, inner, dim] = shape;
  const bool transpose = c.boolean(7, "transpose");
  Buffer* y = c.buffer(8, "y");
  if (dim % 2) throw RangeError("rotatePairs: dim " + std::to_string(dim) + " must be even");
  const DType t = expect_float(x, shape.size(), "rotatePairs x");
  expect(cos, DType::F32, positions * dim, "rotatePairs cos");
  expect(sin, DType::F32, positions * dim, "rotatePairs sin");
  // y may be of the other float type: float32 gradients rotated into bfloat16 ones
  const DType out_t = expect_float(y, shape.size(), "rotatePairs output");
  // checkId (optional): the queued finiteness check of y, done as y is written
  const QueuedCheck check = c.is_nullish(9) ? QueuedCheck{nullptr, nullptr, 0} : queued_check(c.integer(9, "checkId"), "rotatePairs");
  launch_rotate_pairs(t == DType::BF16, out_t == DType::BF16, x->ptr, cos->as<float>(), sin->as<float>(), y->ptr, outer, positions,
                      inner, dim, transpose, check.failed, check.id, stream());
  return undefined(c.env);
}

napi_value store_gradient(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  Buffer* cos = c.optional_buffer(1, "cos");
  Buffer* sin = c.optional_buffer(2, "sin");
  const PairShape shape = pair_shape(c);
  const auto [outer, positions, inner, dim] = shape;
  Buffer* y = c.buffer(7, "y");
  Buffer* sums = c.buffer(8, "sums");
  if ((cos == nullptr) != (sin == nullptr)) throw TypeError("storeGradient: give both rotation tables or neither");
  if (cos && dim % 2) throw RangeError("storeGradient: dim " + std::to_string(dim) + " must be even to rotate pairs");
  const int64_t n = shape.size();
  expect(x, DType::F32, n, "storeGradient x");
  if (cos) {
    expect(cos, DType::F32, positions * dim, "storeGradient cos");
    expect(sin, DType::F32, positions * dim, "storeGradient sin");
  }
  const DType out_t = expect_float(y, n, "storeGradient y");
  expect(sums, DType::F32, inner * dim, "storeGradient sums");
  launch_store_gradient(x->as<float>(), cos ? cos->as<float>() : nullptr, sin ? sin->as<float>() : nullptr, y->ptr, out_t,
                        sums->as<float>(), outer, positions, inner, dim, stream());
  return undefined(c.env);
}

const Register reg({
    {"rotatePairs", entry<rotate_pairs>},
    {"storeGradient", entry<store_gradient>},
});

}  // namespace

}  // namespace ln::js
