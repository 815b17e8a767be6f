// Binding: rotary positions over pairs (XPos and rotary embeddings).
#include "../device.h"
#include "../kernels/rotary.h"
#include "js.h"

namespace ln::js {

namespace {

napi_value rotate_pairs(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  Buffer* cos = c.buffer(1, "cos");
  Buffer* sin = c.buffer(2, "sin");
  const int64_t outer = c.integer(3, "outer"), positions = c.integer(4, "positions"), inner = c.integer(5, "inner");
  const int64_t dim = c.integer(6, "dim");
  const bool transpose = c.boolean(7, "transpose");
  Buffer* y = c.buffer(8, "y");
  if (dim % 2) throw RangeError("rotatePairs: dim " + std::to_string(dim) + " must be even");
  const DType t = expect_float(x, outer * positions * inner * dim, "rotatePairs x");
  expect(cos, DType::F32, positions * dim, "rotatePairs cos");
  expect(sin, DType::F32, positions * dim, "rotatePairs sin");
  // y may be of the other float type: float32 gradients rotated into bfloat16 ones
  const DType out_t = expect_float(y, outer * positions * inner * dim, "rotatePairs output");
  // checkId (optional): the queued finiteness check of y, done as y is written
  const QueuedCheck check = c.is_nullish(9) ? QueuedCheck{nullptr, nullptr, 0} : queued_check(c.integer(9, "checkId"), "rotatePairs");
  launch_rotate_pairs(t == DType::BF16, out_t == DType::BF16, x->ptr, cos->as<float>(), sin->as<float>(), y->ptr, outer, positions,
                      inner, dim, transpose, check.failed, check.id, stream());
  return undefined(c.env);
}

const Register reg({{"rotatePairs", entry<rotate_pairs>}});

}  // namespace

}  // namespace ln::js
