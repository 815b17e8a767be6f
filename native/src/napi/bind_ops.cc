// Bindings: elementwise maps, reductions, matrix products and layout ops.
#include <algorithm>
#include <cstring>

#include "../device.h"
#include "../gemm.h"
#include "../memory.h"
#include "../kernels/elementwise.h"
#include "../kernels/layout.h"
#include "../kernels/norms.h"
#include "../kernels/reduce.h"
#include "js.h"

namespace ln::js {

namespace {

template <typename E, size_t N>
E lookup(const std::string& name, const char* const (&names)[N], const char* what) {
  for (size_t i = 0; i < N; i++) {
    if (name == names[i]) return static_cast<E>(i);
  }
  throw TypeError(std::string("unknown ") + what + " '" + name + "'");
}

// In the order of the enums in kernels/elementwise.h.
const char* const kUnary[] = {"neg", "exp", "log", "sqrt", "rsqrt", "tanh", "abs", "relu", "gelu", "sigmoid", "square", "reciprocal"};
const char* const kBinary[] = {"add", "sub", "mul", "div", "maximum", "minimum", "pow", "greater", "reluBackward", "geluBackward"};

napi_value unary(const Call& c) {
  const UnaryOp op = lookup<UnaryOp>(c.string(0, "op"), kUnary, "unary op");
  Buffer* x = c.buffer(1, "x");
  Buffer* out = c.buffer(2, "out");
  const DType t = expect_float(x, -1, "unary input");
  expect(out, t, x->size, "unary output");
  launch_unary(op, t, x->ptr, out->ptr, x->size, stream());
  return undefined(c.env);
}

napi_value binary(const Call& c) {
  const BinaryOp op = lookup<BinaryOp>(c.string(0, "op"), kBinary, "binary op");
  Buffer* a = c.buffer(1, "a");
  const Dims a_shape = c.dims(2, "aShape");
  Buffer* b = c.buffer(3, "b");
  const Dims b_shape = c.dims(4, "bShape");
  Buffer* out = c.buffer(5, "out");
  const Dims out_shape = c.dims(6, "outShape");
  const int64_t n = product(out_shape);
  const DType t = expect_float(a, product(a_shape), "binary a");
  expect(b, t, product(b_shape), "binary b");
  expect(out, t, n, "binary output");
  const StridedLayout l = collapse(out_shape, {broadcast_strides(a_shape, out_shape), broadcast_strides(b_shape, out_shape)}, "binary");
  launch_binary(op, t, a->ptr, b->ptr, out->ptr, l, n, stream());
  return undefined(c.env);
}

napi_value binary_scalar(const Call& c) {
  const BinaryOp op = lookup<BinaryOp>(c.string(0, "op"), kBinary, "binary op");
  Buffer* a = c.buffer(1, "a");
  const float scalar = static_cast<float>(c.number(2, "scalar"));
  Buffer* out = c.buffer(3, "out");
  const DType t = expect_float(a, -1, "binaryScalar input");
  expect(out, t, a->size, "binaryScalar output");
  launch_binary_scalar(op, t, a->ptr, scalar, out->ptr, a->size, stream());
  return undefined(c.env);
}

napi_value reduce(const Call& c) {
  const std::string name = c.string(0, "op");
  if (name != "sum" && name != "max") throw TypeError("unknown reduce op '" + name + "'");
  Buffer* x = c.buffer(1, "x");
  const Dims shape = c.dims(2, "shape");
  const Dims axes = c.dims(3, "axes");
  Buffer* out = c.buffer(4, "out");
  const DType t = expect_float(x, product(shape), "reduce input");
  int64_t out_size = 1;
  for (size_t i = 0; i < shape.size(); i++) {
    if (std::find(axes.begin(), axes.end(), int64_t(i)) == axes.end()) out_size *= shape[i];
  }
  for (int64_t a : axes) {
    if (a < 0 || a >= int64_t(shape.size())) throw RangeError("reduce: axis " + std::to_string(a) + " out of range");
  }
  expect(out, t, out_size, "reduce output");
  const ReduceOp op = name == "sum" ? ReduceOp::Sum : ReduceOp::Max;
  launch_reduce_into(op, t, x->ptr, t, out->ptr, shape, axes, stream());
  return undefined(c.env);
}

napi_value matmul(const Call& c) {
  Buffer* a = c.buffer(0, "a");
  const Dims a_shape = c.dims(1, "aShape");
  Buffer* b = c.buffer(2, "b");
  const Dims b_shape = c.dims(3, "bShape");
  const bool ta = c.boolean(4, "transA"), tb = c.boolean(5, "transB");
  const Dims batch = c.dims(6, "batchShape");
  const int64_t m = c.integer(7, "m"), n = c.integer(8, "n"), k = c.integer(9, "k");
  Buffer* out = c.buffer(10, "out");
  Buffer* bias = c.optional_buffer(11, "bias");
  Buffer* addend = c.optional_buffer(12, "addend");
  if (a_shape.size() < 2 || b_shape.size() < 2) throw RangeError("matmul: operands need at least 2 dimensions");
  const DType t = expect_float(a, product(a_shape), "matmul a");
  if (bias) {
    expect(bias, t, n, "matmul bias");
    if (k == 0) throw RangeError("matmul: a bias needs k > 0");
  }
  expect(b, t, product(b_shape), "matmul b");
  expect(out, t, product(batch) * m * n, "matmul output");
  if (addend) expect(addend, t, product(batch) * m * n, "matmul addend");
  const int64_t ar = a_shape[a_shape.size() - 2], ac = a_shape.back();
  const int64_t br = b_shape[b_shape.size() - 2], bc = b_shape.back();
  if ((ta ? ac : ar) != m || (ta ? ar : ac) != k || (tb ? bc : br) != k || (tb ? br : bc) != n) {
    throw RangeError("matmul: operand shapes do not match m, n, k");
  }
  ln::matmul(t, a->ptr, a_shape, b->ptr, b_shape, ta, tb, batch, m, n, k, out->ptr, stream(), bias ? bias->ptr : nullptr,
             addend ? addend->ptr : nullptr);
  return undefined(c.env);
}

// linearGrads(dy, x, rows, in, out, dWeight, dBias | null): dWeight and dBias of their own dtype (x's, or
// float32 for bfloat16 x)
napi_value linear_grads(const Call& c) {
  Buffer* dy = c.buffer(0, "dy");
  Buffer* x = c.buffer(1, "x");
  const int64_t rows = c.integer(2, "rows"), in = c.integer(3, "inFeatures"), out = c.integer(4, "outFeatures");
  Buffer* dw = c.buffer(5, "dWeight");
  Buffer* db = c.optional_buffer(6, "dBias");
  const DType t = expect_float(x, rows * in, "linearGrads x");
  expect(dy, t, rows * out, "linearGrads dy");
  const DType out_t = expect_float(dw, in * out, "linearGrads dWeight");
  if (db) expect(db, out_t, out, "linearGrads dBias");
  weight_gradient(t, dy->ptr, x->ptr, rows, in, out, out_t, dw->ptr, db ? db->ptr : nullptr, stream());
  return undefined(c.env);
}

// linearGelu(x, weight, bias, rows, in, out, y, pre): one dtype throughout
napi_value linear_gelu(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  Buffer* w = c.buffer(1, "weight");
  Buffer* bias = c.buffer(2, "bias");
  const int64_t rows = c.integer(3, "rows"), in = c.integer(4, "inFeatures"), out = c.integer(5, "outFeatures");
  Buffer* y = c.buffer(6, "y");
  Buffer* pre = c.buffer(7, "pre");
  if (in == 0) throw RangeError("linearGelu: needs inFeatures > 0");
  const DType t = expect_float(x, rows * in, "linearGelu x");
  expect(w, t, out * in, "linearGelu weight");
  expect(bias, t, out, "linearGelu bias");
  expect(y, t, rows * out, "linearGelu y");
  expect(pre, t, rows * out, "linearGelu pre");
  ln::linear_gelu(t, x->ptr, w->ptr, bias->ptr, rows, in, out, y->ptr, pre->ptr, stream());
  return undefined(c.env);
}

napi_value permute(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  const Dims shape = c.dims(1, "shape");
  const Dims perm = c.dims(2, "perm");
  Buffer* out = c.buffer(3, "out");
  if (perm.size() != shape.size()) throw RangeError("permute: perm and shape differ in length");
  std::vector<bool> seen(shape.size(), false);
  for (int64_t p : perm) {
    if (p < 0 || p >= int64_t(shape.size()) || seen[p]) throw RangeError("permute: invalid permutation");
    seen[p] = true;
  }
  expect(x, x->dtype, product(shape), "permute input");
  expect(out, x->dtype, x->size, "permute output");
  launch_permute(x->ptr, out->ptr, dtype_size(x->dtype), shape, perm, stream());
  return undefined(c.env);
}

void check_block(const Dims& shape, const Dims& begin, const Dims& size, const char* what) {
  if (begin.size() != shape.size() || size.size() != shape.size()) throw RangeError(std::string(what) + ": rank mismatch");
  for (size_t i = 0; i < shape.size(); i++) {
    if (begin[i] < 0 || size[i] < 0 || begin[i] + size[i] > shape[i]) throw RangeError(std::string(what) + ": block out of bounds");
  }
}

napi_value slice(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  const Dims shape = c.dims(1, "shape");
  const Dims begin = c.dims(2, "begin");
  const Dims size = c.dims(3, "size");
  Buffer* out = c.buffer(4, "out");
  check_block(shape, begin, size, "slice");
  expect(x, x->dtype, product(shape), "slice input");
  expect(out, x->dtype, product(size), "slice output");
  launch_slice(x->ptr, out->ptr, dtype_size(x->dtype), shape, begin, size, stream());
  return undefined(c.env);
}

napi_value add_slice_into(const Call& c) {
  Buffer* dst = c.buffer(0, "dst");
  const Dims dst_shape = c.dims(1, "dstShape");
  Buffer* src = c.buffer(2, "src");
  const Dims src_shape = c.dims(3, "srcShape");
  const Dims begin = c.dims(4, "begin");
  check_block(dst_shape, begin, src_shape, "addSliceInto");
  expect(dst, DType::F32, product(dst_shape), "addSliceInto dst");
  expect(src, DType::F32, product(src_shape), "addSliceInto src");
  launch_add_slice_into(dst->as<float>(), dst_shape, src->as<float>(), src_shape, begin, stream());
  return undefined(c.env);
}

napi_value sums_of_squares(const Call& c) {
  const std::vector<Buffer*> xs = c.buffers(0, "xs");
  Buffer* out = c.buffer(1, "out");
  expect(out, DType::F32, int64_t(xs.size()), "sumsOfSquares output");
  std::vector<const float*> pointers;
  std::vector<int64_t> sizes;
  for (const Buffer* x : xs) {
    expect(x, DType::F32, -1, "sumsOfSquares input");
    pointers.push_back(x->as<float>());
    sizes.push_back(x->size);
  }
  launch_sums_of_squares(pointers, sizes, out->as<float>(), stream());
  return undefined(c.env);
}

const Register reg({
    {"unary", entry<unary>},
    {"binary", entry<binary>},
    {"binaryScalar", entry<binary_scalar>},
    {"reduce", entry<reduce>},
    {"sumsOfSquares", entry<sums_of_squares>},
    {"matmul", entry<matmul>},
    {"linearGrads", entry<linear_grads>},
    {"linearGelu", entry<linear_gelu>},
    {"permute", entry<permute>},
    {"slice", entry<slice>},
    {"addSliceInto", entry<add_slice_into>},
});

}  // namespace

}  // namespace ln::js
