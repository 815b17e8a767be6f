#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <tuple>

#include "device.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "lib/cublaslt.h"
#include "memory.h"
#include "strided.h"

namespace ln {

namespace {

MatmulPrecision g_precision = MatmulPrecision::TF32;
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

struct LtState {
  lt::Handle handle = nullptr;
  void* workspace = nullptr;
};

LtState& lt_state() {
  static LtState st;
  if (!st.handle) {
    const lt::Api& api = lt::api();
    lt::check(api.Create(&st.handle), "cublasLtCreate");
    size_t cap = 0;
    st.workspace = allocator().allocate(kWorkspaceBytes, cap);
  }
  return st;
}

// One column-major problem for cuBLASLt: D[n_, m_] = op(X) op(Y), strided over `batch`.
struct Problem {
  uint64_t x_rows, x_cols, y_rows, y_cols;
  int64_t x_ld, y_ld, d_ld;
  int op_x, op_y;
  uint64_t d_rows, d_cols;
  int32_t batch;
  int64_t x_stride, y_stride, d_stride;
  uint32_t align_x, align_y, align_d;
  int precision;
  bool bf16;        // bfloat16 storage of X and Y (fp32 accumulation)
  bool f32_out;     // D in float32 whatever the operands' storage (weight gradients)
  uint32_t epilogue;  // lt::Epilogue
  uint32_t align_bias, align_aux, align_addend;  // align_addend 0: beta = 0, no C
  int64_t aux_ld;
  auto key() const {
    return std::make_tuple(x_rows, x_cols, y_rows, y_cols, x_ld, y_ld, d_ld, op_x, op_y, batch, x_stride, y_stride, d_stride,
                           align_x, align_y, align_d, precision, bf16, f32_out, epilogue, align_bias, align_aux, align_addend,
                           aux_ld);
  }
};

// What is added to D = op(X) op(Y): an addend of D's shape and type (cuBLASLt's C, beta = 1), and by the
// epilogue a bias on each column of D, or gelu of that with the pre-activation written to `aux`.
struct Epilogue {
  uint32_t kind = lt::kEpilogueDefault;
  const void* bias = nullptr;
  void* aux = nullptr;
  int64_t aux_ld = 0;
  const void* addend = nullptr;
};

// Whether the epilogue fuses more than the bias: cuBLASLt may lack an algorithm for it, and the caller then
// does without it (a product without one must have an algorithm).
bool optional_epilogue(const Epilogue& e) { return e.kind != lt::kEpilogueDefault && e.kind != lt::kEpilogueBias; }

struct Plan {
  bool found = false;  // whether cuBLASLt has an algorithm for the problem and its epilogue
  lt::MatmulDesc desc = nullptr;
  lt::MatrixLayout x = nullptr, y = nullptr, d = nullptr;
  lt::MatmulAlgo algo{};
};

uint32_t alignment(const void* p, int64_t stride_elems, int32_t batch, size_t elem_bytes = sizeof(float)) {
  uint64_t v = reinterpret_cast<uintptr_t>(p);
  if (batch > 1) v |= uint64_t(stride_elems) * elem_bytes;
  uint32_t a = 256;
  while (a > 4 && (v % a) != 0) a /= 2;
  return a;
}

lt::MatrixLayout make_layout(cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld, int32_t batch, int64_t stride) {
  const lt::Api& api = lt::api();
  lt::MatrixLayout l = nullptr;
  lt::check(api.MatrixLayoutCreate(&l, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    lt::check(api.MatrixLayoutSetAttribute(l, lt::kLayoutBatchCount, &batch, sizeof batch), "cublasLtMatrixLayoutSetAttribute");
    lt::check(api.MatrixLayoutSetAttribute(l, lt::kLayoutStridedBatchOffset, &stride, sizeof stride),
              "cublasLtMatrixLayoutSetAttribute");
  }
  return l;
}

void set_attribute(lt::MatmulDesc desc, lt::DescAttribute attribute, const void* value, size_t bytes) {
  lt::check(lt::api().MatmulDescSetAttribute(desc, attribute, value, bytes), "cublasLtMatmulDescSetAttribute");
}

// The epilogue and this call's vectors (the heuristic reads the pointers for their alignment; a plan from
// the cache gets the new call's pointers here).
void set_epilogue(lt::MatmulDesc desc, const Epilogue& e) {
  set_attribute(desc, lt::kDescEpilogue, &e.kind, sizeof e.kind);
  if (e.bias) set_attribute(desc, lt::kDescBiasPointer, &e.bias, sizeof e.bias);
  if (e.aux) {
    set_attribute(desc, lt::kDescEpilogueAuxPointer, &e.aux, sizeof e.aux);
    set_attribute(desc, lt::kDescEpilogueAuxLd, &e.aux_ld, sizeof e.aux_ld);
  }
}

const Plan& plan_for(const Problem& p, const Epilogue& e) {
  static std::map<decltype(p.key()), Plan> cache;
  auto it = cache.find(p.key());
  if (it != cache.end()) return it->second;
  const lt::Api& api = lt::api();
  LtState& st = lt_state();
  Plan plan;
  // BF16 precision: the operands arrive converted to bf16 (run_problem), products accumulate in fp32;
  // bf16 storage: bf16 operands and result, fp32 accumulation, whatever the precision setting
  const int compute = !p.bf16 && p.precision == int(MatmulPrecision::TF32) ? lt::kCompute32FFastTF32 : lt::kCompute32F;
  const cudaDataType operand = p.bf16 || p.precision == int(MatmulPrecision::BF16) ? CUDA_R_16BF : CUDA_R_32F;
  const cudaDataType out_type = p.bf16 && !p.f32_out ? CUDA_R_16BF : CUDA_R_32F;
  lt::check(api.MatmulDescCreate(&plan.desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  set_attribute(plan.desc, lt::kDescTransA, &p.op_x, sizeof p.op_x);
  set_attribute(plan.desc, lt::kDescTransB, &p.op_y, sizeof p.op_y);
  set_epilogue(plan.desc, e);
  plan.x = make_layout(operand, p.x_rows, p.x_cols, p.x_ld, p.batch, p.x_stride);
  plan.y = make_layout(operand, p.y_rows, p.y_cols, p.y_ld, p.batch, p.y_stride);
  plan.d = make_layout(out_type, p.d_rows, p.d_cols, p.d_ld, p.batch, p.d_stride);
  lt::Preference pref = nullptr;
  lt::check(api.MatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = kWorkspaceBytes;
  lt::check(api.MatmulPreferenceSetAttribute(pref, lt::kPrefMaxWorkspaceBytes, &ws, sizeof ws), "cublasLtMatmulPreferenceSetAttribute");
  const uint32_t aligns[4] = {p.align_x, p.align_y, p.align_addend ? p.align_addend : p.align_d, p.align_d};
  for (int i = 0; i < 4; i++) {
    lt::check(api.MatmulPreferenceSetAttribute(pref, lt::kPrefMinAlignmentABytes + i, &aligns[i], sizeof aligns[i]),
              "cublasLtMatmulPreferenceSetAttribute");
  }
  // LONGNET_MATMUL_ALGO=i takes the heuristic's i-th candidate (or its last) instead of its first: for
  // benchmarks that compare them
  static const int pick = [] {
    const char* env = std::getenv("LONGNET_MATMUL_ALGO");
    return env ? std::clamp(std::atoi(env), 0, 15) : 0;
  }();
  lt::HeuristicResult results[16]{};
  int found = 0;
  const lt::Status s = api.MatmulAlgoGetHeuristic(st.handle, plan.desc, plan.x, plan.y, plan.d, plan.d, pref, pick + 1, results, &found);
  api.MatmulPreferenceDestroy(pref);
  const lt::HeuristicResult& result = results[std::max(0, std::min(pick, found - 1))];
  if (s != lt::kSuccess && optional_epilogue(e)) found = 0;
  else lt::check(s, "cublasLtMatmulAlgoGetHeuristic");
  plan.found = found > 0;
  plan.algo = result.algo;
  return cache.emplace(p.key(), plan).first->second;
}

// A float32 operand as bf16 in scratch memory, for the duration of one product. One stream orders the
// work, so the scratch returns to the cache as soon as the product is queued.
class Bf16Copy {
 public:
  Bf16Copy(const float* from, int64_t elems, cudaStream_t s) : copy_(size_t(elems) * 2) {
    launch_cast(from, DType::F32, copy_.as<void>(), DType::BF16, elems, s);
  }
  const void* get() const { return copy_.as<void>(); }

 private:
  Scratch copy_;
};

// Elements an operand spans: its last matrix starts (batch - 1) strides in (0 when broadcast).
int64_t operand_span(uint64_t cols, int64_t ld, int32_t batch, int64_t stride) {
  return int64_t(cols) * ld + (batch > 1 ? int64_t(batch - 1) * stride : 0);
}

// Runs one problem with its epilogue; false (nothing queued) when cuBLASLt has no algorithm for that
// epilogue, which only a fused epilogue may lack (a product without one throws).
bool run_problem(Problem p, const void* x, const void* y, void* d, const Epilogue& e, cudaStream_t s) {
  p.precision = int(g_precision);
  p.epilogue = e.kind;
  const size_t elem = p.bf16 ? 2 : sizeof(float);
  const size_t out_elem = p.f32_out ? sizeof(float) : elem;
  p.align_bias = e.bias ? alignment(e.bias, 0, 1, out_elem) : 0;
  p.align_aux = e.aux ? alignment(e.aux, 0, 1, out_elem) : 0;
  p.aux_ld = e.aux_ld;
  p.align_d = alignment(d, p.d_stride, p.batch, out_elem);
  p.align_addend = e.addend ? alignment(e.addend, p.d_stride, p.batch, out_elem) : 0;
  // cuBLASLt's fp32 products with bf16 compute (32F_FAST_16BF) ran TF32 kernels here; true bf16
  // operands run the bf16 tensor-core kernels at twice TF32's rate
  const bool convert = !p.bf16 && g_precision == MatmulPrecision::BF16;
  std::optional<Bf16Copy> xb, yb;
  if (convert) {
    xb.emplace(static_cast<const float*>(x), operand_span(p.x_cols, p.x_ld, p.batch, p.x_stride), s);
    yb.emplace(static_cast<const float*>(y), operand_span(p.y_cols, p.y_ld, p.batch, p.y_stride), s);
    x = xb->get();
    y = yb->get();
  }
  p.align_x = alignment(x, p.x_stride, p.batch, convert ? 2 : elem);
  p.align_y = alignment(y, p.y_stride, p.batch, convert ? 2 : elem);
  const Plan& plan = plan_for(p, e);
  if (!plan.found) {
    if (!optional_epilogue(e)) {
      fail("cublasLtMatmulAlgoGetHeuristic found no algorithm for a " + std::to_string(p.d_cols) + "x" + std::to_string(p.d_rows) +
           " product (batch " + std::to_string(p.batch) + ")");
    }
    return false;
  }
  set_epilogue(plan.desc, e);
  const float alpha = 1.0f, beta = e.addend ? 1.0f : 0.0f;
  LtState& st = lt_state();
  const void* c = e.addend ? e.addend : d;
  lt::check(lt::api().Matmul(st.handle, plan.desc, &alpha, x, plan.x, y, plan.y, &beta, c, plan.d, d, plan.d, &plan.algo,
                             st.workspace, kWorkspaceBytes, s),
            "cublasLtMatmul");
  return true;
}

// A linear layer's product in the column-major view: D[out, rows] = op(W) op(x) for x [rows, in], W [out, in].
Problem linear_problem(bool bf16, int64_t rows, int64_t in, int64_t out) {
  Problem p{};
  p.bf16 = bf16;
  p.x_rows = in, p.x_cols = out, p.x_ld = in, p.op_x = lt::kOpT;
  p.y_rows = in, p.y_cols = rows, p.y_ld = in, p.op_y = lt::kOpN;
  p.d_rows = out, p.d_cols = rows, p.d_ld = out;
  p.batch = 1;
  return p;
}

}  // namespace

void set_matmul_precision(MatmulPrecision p) { g_precision = p; }
MatmulPrecision matmul_precision() { return g_precision; }

size_t cublaslt_version() { return lt::api().GetVersion(); }

void matmul(DType t, const void* a_, const Dims& a_shape, const void* b_, const Dims& b_shape, bool trans_a, bool trans_b,
            const Dims& batch_shape, int64_t m, int64_t n, int64_t k, void* c_, cudaStream_t s, const void* bias, const void* addend) {
  if (t != DType::F32 && t != DType::BF16) fail(std::string("matmul: needs float32 or bfloat16 storage, got ") + dtype_name(t));
  const int64_t batch = product(batch_shape);
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {
    if (bias) fail("matmul: a bias needs k > 0");
    const size_t bytes = size_t(batch * m * n) * dtype_size(t);
    if (!addend) launch_fill(c_, t, 0.0, batch * m * n, s);
    else if (addend != c_) check_cuda(cudaMemcpyAsync(c_, addend, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    return;
  }
  const size_t elem = dtype_size(t);
  const char* a = static_cast<const char*>(a_);
  const char* b = static_cast<const char*>(b_);
  char* c = static_cast<char*>(c_);
  // strides of each operand over the batch dimensions, in elements (0 where broadcast)
  auto batch_strides = [&](const Dims& shape, int64_t matrix) {
    Dims lead(shape.begin(), shape.end() - 2);
    Dims st = broadcast_strides(lead, batch_shape);
    for (auto& v : st) v *= matrix;
    return st;
  };
  Dims sa = batch_strides(a_shape, m * k), sb = batch_strides(b_shape, k * n);
  Dims sc = contiguous_strides(batch_shape);
  for (auto& v : sc) v *= m * n;

  // b shared by every batch and a contiguous: one product with the batch folded into m
  const bool b_shared = std::all_of(sb.begin(), sb.end(), [](int64_t v) { return v == 0; });
  Dims a_contig = contiguous_strides(batch_shape);
  for (auto& v : a_contig) v *= m * k;
  int64_t mm = m, outer_batch = batch;
  if (b_shared && !trans_a && sa == a_contig) {
    mm = m * batch;
    outer_batch = 1;
  }

  // column-major view: C^T[n, m] = op(B)^T op(A)^T, so X is b's buffer and Y is a's
  Problem p{};
  p.bf16 = t == DType::BF16;
  p.x_rows = trans_b ? k : n;
  p.x_cols = trans_b ? n : k;
  p.x_ld = trans_b ? k : n;
  p.op_x = trans_b ? lt::kOpT : lt::kOpN;
  p.y_rows = trans_a ? mm : k;
  p.y_cols = trans_a ? k : mm;
  p.y_ld = trans_a ? mm : k;
  p.op_y = trans_a ? lt::kOpT : lt::kOpN;
  p.d_rows = n;
  p.d_cols = mm;
  p.d_ld = n;

  Epilogue e;
  if (bias) {
    e.kind = lt::kEpilogueBias;
    e.bias = bias;
  }
  e.addend = addend;
  if (outer_batch == 1) {
    p.batch = 1;
    run_problem(p, b, a, c, e, s);
    return;
  }
  // merge batch dimensions; the innermost one becomes cuBLASLt's strided batch, the rest a host loop
  const StridedLayout l = collapse(batch_shape, {sa, sb, sc}, "matmul");
  const int inner = l.rank - 1;
  const int64_t inner_count = l.shape[inner];
  if (inner_count > INT32_MAX) fail("matmul: batch too large");
  p.batch = static_cast<int32_t>(inner_count);
  p.y_stride = l.stride[0][inner];
  p.x_stride = l.stride[1][inner];
  p.d_stride = l.stride[2][inner];
  int64_t outer = 1;
  for (int d = 0; d < inner; d++) outer *= l.shape[d];
  for (int64_t o = 0; o < outer; o++) {
    int64_t rem = o, oa = 0, ob = 0, oc = 0;
    for (int d = inner - 1; d >= 0; d--) {
      const int64_t i = rem % l.shape[d];
      rem /= l.shape[d];
      oa += i * l.stride[0][d];
      ob += i * l.stride[1][d];
      oc += i * l.stride[2][d];
    }
    Epilogue at = e;
    if (addend) at.addend = static_cast<const char*>(addend) + oc * elem;
    run_problem(p, b + ob * elem, a + oa * elem, c + oc * elem, at, s);
  }
}

void weight_gradient(DType t, const void* dy, const void* x, int64_t rows, int64_t in, int64_t out, DType out_t, void* dw,
                     void* db, cudaStream_t s) {
  if (!(out_t == t || (t == DType::BF16 && out_t == DType::F32))) {
    fail(std::string("weight_gradient: ") + dtype_name(t) + " operands cannot give " + dtype_name(out_t) + " gradients");
  }
  if (in == 0 || out == 0) return;
  if (rows == 0) {
    launch_fill(dw, out_t, 0.0, in * out, s);
    if (db) launch_fill(db, out_t, 0.0, out, s);
    return;
  }
  // column-major: dW^T[in, out] = x^T[in, rows] dy[rows, out], so X is x's buffer and Y is dy's
  Problem p{};
  p.bf16 = t == DType::BF16;
  p.f32_out = out_t == DType::F32 && t != DType::F32;
  p.x_rows = in, p.x_cols = rows, p.x_ld = in, p.op_x = lt::kOpN;
  p.y_rows = out, p.y_cols = rows, p.y_ld = out, p.op_y = lt::kOpT;
  p.d_rows = in, p.d_cols = out, p.d_ld = in;
  p.batch = 1;
  run_problem(p, x, dy, dw, Epilogue{}, s);
  // dy's column sums by the reduction kernel (into float32 directly): cuBLASLt's BGRADB epilogue, which
  // sums them in the product, cost the product as much as the kernel takes or more (bench/RESULTS.md)
  if (db) launch_reduce_into(ReduceOp::Sum, t, dy, out_t, db, {rows, out}, {0}, s);
}

void linear_gelu(DType t, const void* x, const void* w, const void* bias, int64_t rows, int64_t in, int64_t out, void* y,
                 void* pre, cudaStream_t s) {
  if (t != DType::F32 && t != DType::BF16) fail(std::string("linear_gelu: needs float32 or bfloat16 storage, got ") + dtype_name(t));
  if (in == 0) fail("linear_gelu: needs in > 0");
  if (rows == 0 || out == 0) return;
  const Problem p = linear_problem(t == DType::BF16, rows, in, out);
  Epilogue e;
  e.kind = lt::kEpilogueGeluAuxBias;
  e.bias = bias;
  e.aux = pre;
  e.aux_ld = out;
  if (run_problem(p, w, x, y, e, s)) return;
  e = Epilogue{};
  e.kind = lt::kEpilogueBias;
  e.bias = bias;
  run_problem(p, w, x, pre, e, s);
  launch_unary(UnaryOp::Gelu, t, pre, y, rows * out, s);
}

}  // namespace ln
