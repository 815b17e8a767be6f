// Bindings: the fused bf16 dilated-attention kernels (flash_attention.h) and what their callers need
// around them: Dsum for the backward, device-side random inputs, a fresh peak-memory measurement, and the
// strided row copies that pack a pattern's selected keys for sequence parallelism.
#include <cmath>
#include <vector>

#include "../device.h"
#include "../kernels/attention_dsum.h"
#include "../kernels/flash_attention.h"
#include "../kernels/random.h"
#include "attention_args.h"
#include "js.h"

namespace ln::js {

namespace {

// Throws a RangeError naming `fn` and `arg` unless the buffer holds `size` elements of `dtype`.
void need(const Buffer* b, DType dtype, int64_t size, const char* fn, const char* arg) {
  if (b->dtype != dtype) {
    throw RangeError(std::string(fn) + ": " + arg + " must be " + dtype_name(dtype) + ", got " + dtype_name(b->dtype));
  }
  if (b->size != size) {
    throw RangeError(std::string(fn) + ": " + arg + " has " + std::to_string(b->size) + " elements, expected " + std::to_string(size));
  }
}

void need_float_or_bf16(const Buffer* b, const char* fn, const char* arg) {
  if (b->dtype != DType::F32 && b->dtype != DType::BF16) {
    throw RangeError(std::string(fn) + ": " + arg + " must be float32 or bfloat16, got " + dtype_name(b->dtype));
  }
}

void read_flash_geometry(const Call& c, size_t first, const char* fn, AttentionShape& sh, AttentionOptions& opt) {
  read_geometry(c, first, sh, opt);
  if (!flash_attention_supports(sh.head_dim)) {
    throw RangeError(std::string(fn) + ": headDim must be 32, 64 or 128, got " + std::to_string(sh.head_dim));
  }
}

// (q, k, v, o, lse, batch, seqLen, heads, headDim, patterns, causal, scale, blocked[, accumulate]): o float32
// or bfloat16; with accumulate, merges into o and lse as they stand instead of overwriting them.
napi_value flash_forward(const Call& c) {
  constexpr const char* fn = "flashAttentionForward";
  Buffer *q = c.buffer(0, "q"), *k = c.buffer(1, "k"), *v = c.buffer(2, "v"), *o = c.buffer(3, "o"), *lse = c.buffer(4, "lse");
  AttentionShape sh{};
  AttentionOptions opt{};
  read_flash_geometry(c, 5, fn, sh, opt);
  const bool accumulate = !c.is_nullish(13) && c.boolean(13, "accumulate");
  const int64_t rows = sh.batch * sh.seq * sh.heads, n = rows * sh.head_dim;
  need(q, DType::BF16, n, fn, "q");
  need(k, DType::BF16, n, fn, "k");
  need(v, DType::BF16, n, fn, "v");
  need_float_or_bf16(o, fn, "o");
  need(o, o->dtype, n, fn, "o");
  need(lse, DType::F32, rows, fn, "lse");
  if (rows == 0) return undefined(c.env);
  launch_flash_attention_forward(q->as<__nv_bfloat16>(), k->as<__nv_bfloat16>(), v->as<__nv_bfloat16>(), o->ptr, o->dtype,
                                 lse->as<float>(), sh, opt, accumulate, stream());
  return undefined(c.env);
}

// Throws a RangeError naming problem `index` unless rows row0 + i * stride, i < count, all lie in [0, rows).
void need_rows(int64_t row0, int64_t stride, int64_t count, int64_t rows, const char* fn, size_t index, const char* what,
               const char* arg) {
  const std::string where = std::string(fn) + ": problem " + std::to_string(index) + ": ";
  if (count < 0) throw RangeError(where + what + " count must be >= 0, got " + std::to_string(count));
  if (count == 0) return;
  if (stride < 1) throw RangeError(where + what + " stride must be >= 1, got " + std::to_string(stride));
  // the last row, without overflow: row0 + (count - 1) * stride <= rows - 1
  if (row0 < 0 || row0 >= rows || (count > 1 && stride > (rows - 1 - row0) / (count - 1))) {
    throw RangeError(where + what + " rows " + std::to_string(row0) + " + i * " + std::to_string(stride) + " for i < " +
                     std::to_string(count) + " leave " + arg + "'s " + std::to_string(rows) + " rows");
  }
}

// (q, k, v, o, lse, problems, headDim, causal, scale): problems is [qRow0, qStride, nQ, kRow0, kStride, nK, ...],
// rows of headDim elements; q, o and lse share the query rows, k and v (which may be other storages than q,
// e.g. gathered keys) the key rows. Each problem merges into o and lse. The problems' query rows must be
// distinct (the caller's duty: checking it would cost a pass over every row).
napi_value flash_problems(const Call& c) {
  constexpr const char* fn = "flashProblemsForward";
  Buffer *q = c.buffer(0, "q"), *k = c.buffer(1, "k"), *v = c.buffer(2, "v"), *o = c.buffer(3, "o"), *lse = c.buffer(4, "lse");
  const Dims flat = c.dims(5, "problems");
  const int64_t dim = c.integer(6, "headDim");
  const bool causal = c.boolean(7, "causal");
  const float scale = static_cast<float>(c.number(8, "scale"));
  if (dim < 1 || dim > INT32_MAX || !flash_attention_supports(static_cast<int>(dim))) {
    throw RangeError(std::string(fn) + ": headDim must be 32, 64 or 128, got " + std::to_string(dim));
  }
  if (!std::isfinite(scale)) throw RangeError(std::string(fn) + ": scale must be finite");
  if (flat.size() % 6) throw RangeError(std::string(fn) + ": problems must be [qRow0, qStride, nQ, kRow0, kStride, nK, ...]");
  if (q->dtype != DType::BF16) throw RangeError(std::string(fn) + ": q must be bfloat16, got " + dtype_name(q->dtype));
  if (k->dtype != DType::BF16) throw RangeError(std::string(fn) + ": k must be bfloat16, got " + dtype_name(k->dtype));
  if (q->size % dim) throw RangeError(std::string(fn) + ": q has " + std::to_string(q->size) + " elements, not a multiple of headDim");
  if (k->size % dim) throw RangeError(std::string(fn) + ": k has " + std::to_string(k->size) + " elements, not a multiple of headDim");
  const int64_t q_rows = q->size / dim, k_rows = k->size / dim;
  need(v, DType::BF16, k->size, fn, "v");
  need_float_or_bf16(o, fn, "o");
  need(o, o->dtype, q->size, fn, "o");
  need(lse, DType::F32, q_rows, fn, "lse");
  std::vector<FlashProblem> problems;
  problems.reserve(flat.size() / 6);
  for (size_t i = 0; i < flat.size() / 6; i++) {
    const FlashProblem p{flat[6 * i], flat[6 * i + 1], flat[6 * i + 2], flat[6 * i + 3], flat[6 * i + 4], flat[6 * i + 5]};
    need_rows(p.q_row0, p.q_stride, p.n_q, q_rows, fn, i, "query", "q");
    need_rows(p.k_row0, p.k_stride, p.n_k, k_rows, fn, i, "key", "k");
    if (p.n_q > 0 && p.n_k > 0) problems.push_back(p);  // an empty problem changes nothing
  }
  launch_flash_problems_forward(q->as<__nv_bfloat16>(), k->as<__nv_bfloat16>(), v->as<__nv_bfloat16>(), o->ptr, o->dtype,
                                lse->as<float>(), problems, static_cast<int>(dim), causal, scale, stream());
  return undefined(c.env);
}

// The largest pitch cudaMemcpy2D takes on this device.
int64_t max_pitch() {
  static int64_t cached = 0;
  if (cached == 0) {
    int v = 0;
    check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxPitch, device_info().index), "cudaDeviceGetAttribute (max pitch)");
    cached = v > 0 ? v : INT32_MAX;
  }
  return cached;
}

// (dst, dstRow0, src, srcRow0, srcStride, count, rowElems): dst rows dstRow0 + i = src rows srcRow0 + i * srcStride
// for i < count, rows of rowElems elements of the same dtype, queued on the stream.
napi_value copy_rows(const Call& c) {
  constexpr const char* fn = "copyRows";
  Buffer* dst = c.buffer(0, "dst");
  const int64_t dst_row0 = c.integer(1, "dstRow0");
  Buffer* src = c.buffer(2, "src");
  const int64_t src_row0 = c.integer(3, "srcRow0"), src_stride = c.integer(4, "srcStride");
  const int64_t count = c.integer(5, "count"), row_elems = c.integer(6, "rowElems");
  const std::string f(fn);
  if (dst->dtype != src->dtype) {
    throw RangeError(f + ": dst is " + dtype_name(dst->dtype) + " but src is " + dtype_name(src->dtype));
  }
  if (dst == src) throw RangeError(f + ": dst and src must be different storages");
  if (row_elems < 1) throw RangeError(f + ": rowElems must be >= 1, got " + std::to_string(row_elems));
  if (count < 0) throw RangeError(f + ": count must be >= 0, got " + std::to_string(count));
  if (src_stride < 1) throw RangeError(f + ": srcStride must be >= 1, got " + std::to_string(src_stride));
  if (count == 0) return undefined(c.env);
  const int64_t dst_rows = dst->size / row_elems, src_rows = src->size / row_elems;
  if (dst_row0 < 0 || dst_row0 > dst_rows || count > dst_rows - dst_row0) {
    throw RangeError(f + ": dst rows [" + std::to_string(dst_row0) + ", " + std::to_string(dst_row0 + count) + ") leave dst's " + std::to_string(dst_rows) + " rows of " + std::to_string(row_elems) + " elements");
  }
  if (src_row0 < 0 || src_row0 >= src_rows || (count > 1 && src_stride > (src_rows - 1 - src_row0) / (count - 1))) {
    throw RangeError(f + ": src rows " + std::to_string(src_row0) + " + i * " + std::to_string(src_stride) + " for i < " +
                     std::to_string(count) + " leave src's " + std::to_string(src_rows) + " rows of " + std::to_string(row_elems) +
                     " elements");
  }
  const size_t row_bytes = size_t(row_elems) * dtype_size(dst->dtype);
  char* to = static_cast<char*>(dst->ptr) + size_t(dst_row0) * row_bytes;
  const char* from = static_cast<const char*>(src->ptr) + size_t(src_row0) * row_bytes;
  if (src_stride == 1 || count == 1) {
    check_cuda(cudaMemcpyAsync(to, from, size_t(count) * row_bytes, cudaMemcpyDeviceToDevice, stream()), "cudaMemcpyAsync (copyRows)");
  } else if (int64_t(row_bytes) * src_stride <= max_pitch()) {
    check_cuda(cudaMemcpy2DAsync(to, row_bytes, from, row_bytes * size_t(src_stride), row_bytes, size_t(count), cudaMemcpyDeviceToDevice,
                                 stream()),
               "cudaMemcpy2DAsync (copyRows)");
  } else {
    // a source pitch beyond what cudaMemcpy2D takes: one copy a row
    for (int64_t i = 0; i < count; i++) {
      check_cuda(cudaMemcpyAsync(to + size_t(i) * row_bytes, from + size_t(i * src_stride) * row_bytes, row_bytes, cudaMemcpyDeviceToDevice,
                                 stream()),
                 "cudaMemcpyAsync (copyRows)");
    }
  }
  return undefined(c.env);
}

napi_value flash_backward(const Call& c) {
  constexpr const char* fn = "flashAttentionBackward";
  Buffer *q = c.buffer(0, "q"), *k = c.buffer(1, "k"), *v = c.buffer(2, "v"), *d_o = c.buffer(3, "dO");
  Buffer *lse = c.buffer(4, "lse"), *dsum = c.buffer(5, "dsum");
  Buffer *dq = c.buffer(6, "dq"), *dk = c.buffer(7, "dk"), *dv = c.buffer(8, "dv");
  AttentionShape sh{};
  AttentionOptions opt{};
  read_flash_geometry(c, 9, fn, sh, opt);
  const int64_t rows = sh.batch * sh.seq * sh.heads, n = rows * sh.head_dim;
  need(q, DType::BF16, n, fn, "q");
  need(k, DType::BF16, n, fn, "k");
  need(v, DType::BF16, n, fn, "v");
  need(d_o, DType::BF16, n, fn, "dO");
  need(lse, DType::F32, rows, fn, "lse");
  need(dsum, DType::F32, rows, fn, "dsum");
  need(dq, DType::F32, n, fn, "dq");
  need(dk, DType::F32, n, fn, "dk");
  need(dv, DType::F32, n, fn, "dv");
  if (rows == 0) return undefined(c.env);
  launch_flash_attention_backward(q->as<__nv_bfloat16>(), k->as<__nv_bfloat16>(), v->as<__nv_bfloat16>(), d_o->as<__nv_bfloat16>(),
                                  lse->as<float>(), dsum->as<float>(), dq->as<float>(), dk->as<float>(), dv->as<float>(), sh, opt,
                                  stream());
  return undefined(c.env);
}

napi_value dsum(const Call& c) {
  constexpr const char* fn = "attentionDsum";
  Buffer *o = c.buffer(0, "o"), *d_o = c.buffer(1, "dO"), *out = c.buffer(2, "dsum");
  const int64_t rows = c.integer(3, "rows"), dim = c.integer(4, "dim");
  if (rows < 0) throw RangeError(std::string(fn) + ": rows must be >= 0, got " + std::to_string(rows));
  if (dim < 1 || dim > INT32_MAX) throw RangeError(std::string(fn) + ": dim must be positive, got " + std::to_string(dim));
  need_float_or_bf16(o, fn, "o");
  need_float_or_bf16(d_o, fn, "dO");
  need(o, o->dtype, rows * dim, fn, "o");
  need(d_o, d_o->dtype, rows * dim, fn, "dO");
  need(out, DType::F32, rows, fn, "dsum");
  launch_attention_dsum(o->ptr, o->dtype, d_o->ptr, d_o->dtype, out->as<float>(), rows, static_cast<int>(dim), stream());
  return undefined(c.env);
}

napi_value fill_random_normal(const Call& c) {
  constexpr const char* fn = "fillRandomNormal";
  Buffer* x = c.buffer(0, "x");
  const int64_t seed = c.integer(1, "seed");
  const double stddev = c.number(2, "stddev");
  need_float_or_bf16(x, fn, "x");
  if (seed < 0) throw RangeError(std::string(fn) + ": seed must be a non-negative integer, got " + std::to_string(seed));
  if (!std::isfinite(stddev) || stddev < 0) throw RangeError(std::string(fn) + ": stddev must be finite and >= 0");
  launch_fill_random_normal(x->ptr, x->dtype, x->size, static_cast<uint64_t>(seed), static_cast<float>(stddev), stream());
  return undefined(c.env);
}

napi_value reset_peak_memory(const Call& c) {
  allocator().reset_peak();
  return undefined(c.env);
}

const Register reg({
    {"flashAttentionForward", entry<flash_forward>},
    {"flashProblemsForward", entry<flash_problems>},
    {"flashAttentionBackward", entry<flash_backward>},
    {"attentionDsum", entry<dsum>},
    {"fillRandomNormal", entry<fill_random_normal>},
    {"resetPeakMemory", entry<reset_peak_memory>},
    {"copyRows", entry<copy_rows>},
});

}  // namespace

}  // namespace ln::js
