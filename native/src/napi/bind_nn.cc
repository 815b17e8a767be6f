// Bindings: softmax, layer norm, cross-entropy, embeddings and AdamW.
#include <cmath>

#include "../device.h"
#include "../kernels/layer_norm.h"
#include "../kernels/nn.h"
#include "../kernels/optimizer.h"
#include "js.h"

namespace ln::js {

namespace {

napi_value softmax(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  const int64_t rows = c.integer(1, "rows"), cols = c.integer(2, "cols");
  const bool log = c.boolean(3, "log");
  Buffer* out = c.buffer(4, "out");
  expect(x, DType::F32, rows * cols, "softmax input");
  expect(out, DType::F32, rows * cols, "softmax output");
  launch_softmax(x->as<float>(), out->as<float>(), rows, cols, log, stream());
  return undefined(c.env);
}

napi_value softmax_backward(const Call& c) {
  Buffer* y = c.buffer(0, "y");
  Buffer* dy = c.buffer(1, "dy");
  const int64_t rows = c.integer(2, "rows"), cols = c.integer(3, "cols");
  const bool log = c.boolean(4, "log");
  Buffer* out = c.buffer(5, "out");
  expect(y, DType::F32, rows * cols, "softmaxBackward y");
  expect(dy, DType::F32, rows * cols, "softmaxBackward dy");
  expect(out, DType::F32, rows * cols, "softmaxBackward output");
  launch_softmax_backward(y->as<float>(), dy->as<float>(), out->as<float>(), rows, cols, log, stream());
  return undefined(c.env);
}

// An optional float32 parameter vector (the scale and shift of a layer norm, float32 for either activation type).
const float* optional_f32(const Buffer* b, int64_t size, const char* name) {
  if (!b) return nullptr;
  expect(b, DType::F32, size, name);
  return b->as<float>();
}

napi_value layer_norm(const Call& c) {
  Buffer* x = c.buffer(0, "x");
  Buffer* gamma = c.optional_buffer(1, "gamma");
  Buffer* beta = c.optional_buffer(2, "beta");
  const int64_t rows = c.integer(3, "rows"), cols = c.integer(4, "cols");
  const float eps = static_cast<float>(c.number(5, "eps"));
  Buffer* y = c.buffer(6, "y");
  Buffer* mean = c.buffer(7, "mean");
  Buffer* rstd = c.buffer(8, "rstd");
  const bool gelu_input = c.boolean(9, "geluInput");
  const DType t = expect_float(x, rows * cols, "layerNorm x");
  expect(y, t, rows * cols, "layerNorm y");
  expect(mean, DType::F32, rows, "layerNorm mean");
  expect(rstd, DType::F32, rows, "layerNorm rstd");
  launch_layer_norm(t, x->ptr, optional_f32(gamma, cols, "layerNorm gamma"), optional_f32(beta, cols, "layerNorm beta"),
                    y->ptr, mean->as<float>(), rstd->as<float>(), rows, cols, eps, gelu_input, stream());
  return undefined(c.env);
}

napi_value layer_norm_backward(const Call& c) {
  Buffer* dy = c.buffer(0, "dy");
  Buffer* x = c.buffer(1, "x");
  Buffer* gamma = c.optional_buffer(2, "gamma");
  Buffer* mean = c.buffer(3, "mean");
  Buffer* rstd = c.buffer(4, "rstd");
  const int64_t rows = c.integer(5, "rows"), cols = c.integer(6, "cols");
  Buffer* dx = c.buffer(7, "dx");
  Buffer* d_gamma = c.optional_buffer(8, "dGamma");
  Buffer* d_beta = c.optional_buffer(9, "dBeta");
  Buffer* addend = c.optional_buffer(10, "addend");
  const bool gelu_input = c.boolean(11, "geluInput");
  Buffer* dx_sums = c.optional_buffer(12, "dxSums");
  Buffer* row_dots = c.optional_buffer(13, "rowDots");
  const int64_t segment = row_dots ? c.integer(14, "segment") : 1;
  if (row_dots && (segment < 1 || cols % segment != 0)) {
    throw RangeError("layerNormBackward: segment " + std::to_string(segment) + " does not divide the row of " + std::to_string(cols));
  }
  const DType t = expect_float(x, rows * cols, "layerNormBackward x");
  expect(dy, t, rows * cols, "layerNormBackward dy");
  expect(mean, DType::F32, rows, "layerNormBackward mean");
  expect(rstd, DType::F32, rows, "layerNormBackward rstd");
  expect(dx, t, rows * cols, "layerNormBackward dx");
  if (addend) expect(addend, t, rows * cols, "layerNormBackward addend");
  float* dg = d_gamma ? (expect(d_gamma, DType::F32, cols, "dGamma"), d_gamma->as<float>()) : nullptr;
  float* db = d_beta ? (expect(d_beta, DType::F32, cols, "dBeta"), d_beta->as<float>()) : nullptr;
  float* ds = dx_sums ? (expect(dx_sums, DType::F32, cols, "dxSums"), dx_sums->as<float>()) : nullptr;
  float* rd = row_dots ? (expect(row_dots, DType::F32, rows * (cols / segment), "rowDots"), row_dots->as<float>()) : nullptr;
  launch_layer_norm_backward(t, dy->ptr, x->ptr, optional_f32(gamma, cols, "layerNorm gamma"), mean->as<float>(),
                             rstd->as<float>(), addend ? addend->ptr : nullptr, dx->ptr, dg, db, ds, rd, segment, rows, cols,
                             gelu_input, stream());
  return undefined(c.env);
}

// 1 <= classes <= cols: the columns past `classes` are padding (see nn.h).
int64_t classes_arg(const Call& c, size_t i, int64_t cols) {
  const int64_t classes = c.integer(i, "classes");
  if (classes < 1 || classes > cols) {
    throw RangeError("crossEntropy: classes = " + std::to_string(classes) + " is not an integer in [1, " + std::to_string(cols) +
                     "] (the logits' row length)");
  }
  return classes;
}

// The leading arguments of crossEntropy and crossEntropyWithGrad, checked: logits [rows, cols] (their
// dtype in t), targets [rows], rows, cols, ignoreIndex and classes.
struct LossArgs {
  Buffer* logits;
  Buffer* targets;
  int64_t rows, cols, classes;
  int32_t ignore;
  DType t;
};

LossArgs loss_args(const Call& c, const std::string& op) {
  LossArgs a{};
  a.logits = c.buffer(0, "logits");
  a.targets = c.buffer(1, "targets");
  a.rows = c.integer(2, "rows");
  a.cols = c.integer(3, "cols");
  a.ignore = static_cast<int32_t>(c.integer(4, "ignoreIndex"));
  a.classes = classes_arg(c, 5, a.cols);
  a.t = expect_float(a.logits, a.rows * a.cols, (op + " logits").c_str());
  expect(a.targets, DType::I32, a.rows, (op + " targets").c_str());
  return a;
}

napi_value cross_entropy(const Call& c) {
  const LossArgs a = loss_args(c, "crossEntropy");
  Buffer* loss = c.buffer(6, "loss");
  Buffer* lse = c.buffer(7, "lse");
  const QueuedCheck check = queued_check(c.integer(8, "checkId"), "crossEntropy");
  expect(loss, DType::F32, a.rows, "crossEntropy loss");
  expect(lse, DType::F32, a.rows, "crossEntropy lse");
  // a bad target fails the queued check: the caller hears of it at its next wait, not now
  launch_cross_entropy(a.t, a.logits->ptr, a.targets->as<int32_t>(), loss->as<float>(), lse->as<float>(), a.rows, a.cols, a.classes,
                       a.ignore, check, stream());
  return undefined(c.env);
}

napi_value cross_entropy_backward(const Call& c) {
  Buffer* logits = c.buffer(0, "logits");
  Buffer* targets = c.buffer(1, "targets");
  Buffer* lse = c.buffer(2, "lse");
  Buffer* d_loss = c.buffer(3, "dLoss");
  const int64_t rows = c.integer(4, "rows"), cols = c.integer(5, "cols");
  const int32_t ignore = static_cast<int32_t>(c.integer(6, "ignoreIndex"));
  const int64_t classes = classes_arg(c, 7, cols);
  Buffer* out = c.buffer(8, "out");
  const DType t = expect_float(logits, rows * cols, "crossEntropyBackward logits");
  expect(targets, DType::I32, rows, "crossEntropyBackward targets");
  expect(lse, DType::F32, rows, "crossEntropyBackward lse");
  expect(d_loss, DType::F32, rows, "crossEntropyBackward dLoss");
  expect(out, t, rows * cols, "crossEntropyBackward output");
  launch_cross_entropy_backward(t, logits->ptr, targets->as<int32_t>(), lse->as<float>(), d_loss->as<float>(), out->ptr,
                                rows, cols, classes, ignore, stream());
  return undefined(c.env);
}

napi_value cross_entropy_with_grad(const Call& c) {
  const LossArgs a = loss_args(c, "crossEntropyWithGrad");
  Buffer* weight = c.optional_buffer(6, "weight");
  Buffer* loss = c.buffer(7, "loss");
  Buffer* lse = c.buffer(8, "lse");
  Buffer* out = c.buffer(9, "dLogits");
  const QueuedCheck check = queued_check(c.integer(10, "checkId"), "crossEntropy");
  expect(loss, DType::F32, a.rows, "crossEntropyWithGrad loss");
  expect(lse, DType::F32, a.rows, "crossEntropyWithGrad lse");
  expect(out, a.t, a.rows * a.cols, "crossEntropyWithGrad dLogits");
  launch_cross_entropy_with_grad(a.t, a.logits->ptr, a.targets->as<int32_t>(), optional_f32(weight, 1, "crossEntropyWithGrad weight"),
                                 loss->as<float>(), lse->as<float>(), out->ptr, a.rows, a.cols, a.classes, a.ignore, check, stream());
  return undefined(c.env);
}

// Indices must be below validRows (<= rowsInTable): the rows past it are padding no index may pick.
napi_value gather(const Call& c) {
  Buffer* table = c.buffer(0, "table");
  const int64_t rows_in_table = c.integer(1, "rowsInTable"), cols = c.integer(2, "cols");
  Buffer* indices = c.buffer(3, "indices");
  const int64_t valid_rows = c.integer(4, "validRows");
  Buffer* out = c.buffer(5, "out");
  const QueuedCheck check = queued_check(c.integer(6, "checkId"), "embedding");
  if (valid_rows < 0 || valid_rows > rows_in_table) {
    throw RangeError("embedding: validRows = " + std::to_string(valid_rows) + " is not in [0, " + std::to_string(rows_in_table) + "]");
  }
  expect(table, DType::F32, rows_in_table * cols, "embedding table");
  expect(indices, DType::I32, -1, "embedding indices");
  expect(out, DType::F32, indices->size * cols, "embedding output");
  // the kernel's bound is the rows an index may pick; the table itself may hold more
  launch_gather(table->as<float>(), valid_rows, cols, indices->as<int32_t>(), indices->size, out->as<float>(), check, stream());
  return undefined(c.env);
}

napi_value scatter_add(const Call& c) {
  Buffer* d_out = c.buffer(0, "dOut");
  Buffer* indices = c.buffer(1, "indices");
  const int64_t rows_in_table = c.integer(2, "rowsInTable"), cols = c.integer(3, "cols");
  Buffer* out = c.buffer(4, "out");
  const QueuedCheck check = queued_check(c.integer(5, "checkId"), "embedding");
  expect(indices, DType::I32, -1, "embedding indices");
  expect(d_out, DType::F32, indices->size * cols, "embedding gradient");
  expect(out, DType::F32, rows_in_table * cols, "embedding table gradient");
  if (out->bytes()) check_cuda(cudaMemsetAsync(out->ptr, 0, out->bytes(), stream()), "cudaMemsetAsync");
  launch_scatter_add(d_out->as<float>(), indices->as<int32_t>(), indices->size, rows_in_table, cols, out->as<float>(), check,
                     stream());
  return undefined(c.env);
}

// 1 - lr * weightDecay, rounded once from double as every AdamW update does.
float adamw_decay(double lr, double wd) { return float(1.0 - lr * wd); }

// The hyperparameters of an AdamW update in the kernels' form.
AdamWArgs adamw_args(double lr, double beta1, double beta2, double eps, double wd, double step, double grad_scale) {
  AdamWArgs a{};
  a.lr = float(lr);
  a.beta1 = float(beta1);
  a.beta2 = float(beta2);
  a.eps = float(eps);
  a.decay = adamw_decay(lr, wd);
  a.bias1 = float(1.0 - std::pow(beta1, step));
  a.bias2 = float(1.0 - std::pow(beta2, step));
  a.grad_scale = float(grad_scale);
  return a;
}

napi_value adamw(const Call& c) {
  Buffer* param = c.buffer(0, "param");
  Buffer* grad = c.buffer(1, "grad");
  Buffer* m = c.buffer(2, "m");
  Buffer* v = c.buffer(3, "v");
  const double lr = c.number(4, "lr"), beta1 = c.number(5, "beta1"), beta2 = c.number(6, "beta2"), eps = c.number(7, "eps");
  const double wd = c.number(8, "weightDecay"), step = c.number(9, "step"), grad_scale = c.number(10, "gradScale");
  expect(param, DType::F32, -1, "adamw param");
  expect(grad, DType::F32, param->size, "adamw grad");
  expect(m, DType::F32, param->size, "adamw m");
  expect(v, DType::F32, param->size, "adamw v");
  launch_adamw(param->as<float>(), grad->as<float>(), m->as<float>(), v->as<float>(), param->size,
               adamw_args(lr, beta1, beta2, eps, wd, step, grad_scale), stream());
  return undefined(c.env);
}

// params, grads, ms, vs: lists of one length; weightDecays: one a tensor; copyOf and copies (optional, one
// length): the bfloat16 copies that the update rewrites, copies[j] of params[copyOf[j]].
napi_value adamw_multi(const Call& c) {
  const std::vector<Buffer*> params = c.buffers(0, "params"), grads = c.buffers(1, "grads"), ms = c.buffers(2, "ms"),
                             vs = c.buffers(3, "vs");
  const std::vector<double> decays = c.numbers(4, "weightDecays");
  const double lr = c.number(5, "lr"), beta1 = c.number(6, "beta1"), beta2 = c.number(7, "beta2"), eps = c.number(8, "eps");
  const double step = c.number(9, "step"), grad_scale = c.number(10, "gradScale");
  const size_t count = params.size();
  if (grads.size() != count || ms.size() != count || vs.size() != count || decays.size() != count) {
    throw RangeError("adamwMulti: " + std::to_string(count) + " params but " + std::to_string(grads.size()) + " grads, " +
                     std::to_string(ms.size()) + " m, " + std::to_string(vs.size()) + " v and " + std::to_string(decays.size()) +
                     " weight decays");
  }
  std::vector<AdamWTensor> tensors(count);
  for (size_t i = 0; i < count; i++) {
    expect(params[i], DType::F32, -1, "adamwMulti param");
    const int64_t n = params[i]->size;
    expect(grads[i], DType::F32, n, "adamwMulti grad");
    expect(ms[i], DType::F32, n, "adamwMulti m");
    expect(vs[i], DType::F32, n, "adamwMulti v");
    tensors[i] = {params[i]->as<float>(), grads[i]->as<float>(), ms[i]->as<float>(), vs[i]->as<float>(), n, adamw_decay(lr, decays[i]),
                  nullptr};
  }
  if (!c.is_nullish(11)) {
    const std::vector<double> copy_of = c.numbers(11, "copyOf");
    const std::vector<Buffer*> copies = c.buffers(12, "copies");
    if (copies.size() != copy_of.size()) {
      throw RangeError("adamwMulti: " + std::to_string(copy_of.size()) + " copy indices but " + std::to_string(copies.size()) + " copies");
    }
    for (size_t j = 0; j < copies.size(); j++) {
      const double at = copy_of[j];
      if (!(at >= 0 && at < double(count) && at == std::floor(at))) throw RangeError("adamwMulti: copy index " + std::to_string(at) + " is not a param's");
      AdamWTensor& t = tensors[static_cast<size_t>(at)];
      if (t.copy) throw RangeError("adamwMulti: two copies of param " + std::to_string(static_cast<size_t>(at)));
      expect(copies[j], DType::BF16, t.n, "adamwMulti copy");
      t.copy = copies[j]->as<__nv_bfloat16>();
    }
  }
  AdamWArgs args = adamw_args(lr, beta1, beta2, eps, 0.0, step, grad_scale);
  // clipSquares (optional): the gradients' sum of squares on the device, and maxNorm: the clip taken there
  if (!c.is_nullish(13)) {
    Buffer* squares = c.buffer(13, "clipSquares");
    expect(squares, DType::F32, 1, "adamwMulti clipSquares");
    args.clip_squares = squares->as<float>();
    args.max_norm = static_cast<float>(c.number(14, "maxNorm"));
  }
  launch_adamw_multi(tensors, args, stream());
  return undefined(c.env);
}

const Register reg({
    {"softmax", entry<softmax>},
    {"softmaxBackward", entry<softmax_backward>},
    {"layerNorm", entry<layer_norm>},
    {"layerNormBackward", entry<layer_norm_backward>},
    {"crossEntropy", entry<cross_entropy>},
    {"crossEntropyBackward", entry<cross_entropy_backward>},
    {"crossEntropyWithGrad", entry<cross_entropy_with_grad>},
    {"gather", entry<gather>},
    {"scatterAdd", entry<scatter_add>},
    {"adamw", entry<adamw>},
    {"adamwMulti", entry<adamw_multi>},
});

}  // namespace

}  // namespace ln::js
