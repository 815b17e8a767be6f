#include "gemm.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "device.h"
#include "kernels/elementwise.h"
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
  uint32_t align_bias;  // 0: no bias epilogue
  bool bf16;            // bfloat16 storage of every operand, the result and the bias (fp32 accumulation)
  auto key() const {
    return std::make_tuple(x_rows, x_cols, y_rows, y_cols, x_ld, y_ld, d_ld, op_x, op_y, batch, x_stride, y_stride, d_stride,
                           align_x, align_y, align_d, precision, align_bias, bf16);
  }
};

struct Plan {
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

// A bias of D's rows added by the epilogue (the heuristic reads the pointer for its alignment).
void set_bias(lt::MatmulDesc desc, const void* bias) {
  const lt::Api& api = lt::api();
  const uint32_t epilogue = bias ? lt::kEpilogueBias : lt::kEpilogueDefault;
  lt::check(api.MatmulDescSetAttribute(desc, lt::kDescEpilogue, &epilogue, sizeof epilogue), "cublasLtMatmulDescSetAttribute");
  if (bias) lt::check(api.MatmulDescSetAttribute(desc, lt::kDescBiasPointer, &bias, sizeof bias), "cublasLtMatmulDescSetAttribute");
}

const Plan& plan_for(const Problem& p, const void* bias) {
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
  const cudaDataType out_type = p.bf16 ? CUDA_R_16BF : CUDA_R_32F;
  lt::check(api.MatmulDescCreate(&plan.desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  lt::check(api.MatmulDescSetAttribute(plan.desc, lt::kDescTransA, &p.op_x, sizeof p.op_x), "cublasLtMatmulDescSetAttribute");
  lt::check(api.MatmulDescSetAttribute(plan.desc, lt::kDescTransB, &p.op_y, sizeof p.op_y), "cublasLtMatmulDescSetAttribute");
  set_bias(plan.desc, bias);
  plan.x = make_layout(operand, p.x_rows, p.x_cols, p.x_ld, p.batch, p.x_stride);
  plan.y = make_layout(operand, p.y_rows, p.y_cols, p.y_ld, p.batch, p.y_stride);
  plan.d = make_layout(out_type, p.d_rows, p.d_cols, p.d_ld, p.batch, p.d_stride);
  lt::Preference pref = nullptr;
  lt::check(api.MatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = kWorkspaceBytes;
  lt::check(api.MatmulPreferenceSetAttribute(pref, lt::kPrefMaxWorkspaceBytes, &ws, sizeof ws), "cublasLtMatmulPreferenceSetAttribute");
  const uint32_t aligns[4] = {p.align_x, p.align_y, p.align_d, p.align_d};
  for (int i = 0; i < 4; i++) {
    lt::check(api.MatmulPreferenceSetAttribute(pref, lt::kPrefMinAlignmentABytes + i, &aligns[i], sizeof aligns[i]),
              "cublasLtMatmulPreferenceSetAttribute");
  }
  lt::HeuristicResult result{};
  int found = 0;
  const lt::Status s = api.MatmulAlgoGetHeuristic(st.handle, plan.desc, plan.x, plan.y, plan.d, plan.d, pref, 1, &result, &found);
  api.MatmulPreferenceDestroy(pref);
  lt::check(s, "cublasLtMatmulAlgoGetHeuristic");
  if (found == 0) {
    fail("cublasLtMatmulAlgoGetHeuristic found no algorithm for a " + std::to_string(p.d_cols) + "x" + std::to_string(p.d_rows) +
         " product (batch " + std::to_string(p.batch) + ")");
  }
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

// Runs one problem; `bias` (or null) is added to each of D's columns, i.e. each row of the row-major result.
void run_problem(Problem p, const void* x, const void* y, void* d, const void* bias, cudaStream_t s) {
  p.precision = int(g_precision);
  const size_t elem = p.bf16 ? 2 : sizeof(float);
  p.align_bias = bias ? alignment(bias, 0, 1, elem) : 0;
  const float alpha = 1.0f, beta = 0.0f;
  LtState& st = lt_state();
  p.align_d = alignment(d, p.d_stride, p.batch, elem);
  if (!p.bf16 && g_precision == MatmulPrecision::BF16) {
    // cuBLASLt's fp32 products with bf16 compute (32F_FAST_16BF) ran TF32 kernels here; true bf16
    // operands run the bf16 tensor-core kernels at twice TF32's rate
    const Bf16Copy xb(static_cast<const float*>(x), operand_span(p.x_cols, p.x_ld, p.batch, p.x_stride), s);
    const Bf16Copy yb(static_cast<const float*>(y), operand_span(p.y_cols, p.y_ld, p.batch, p.y_stride), s);
    p.align_x = alignment(xb.get(), p.x_stride, p.batch, 2);
    p.align_y = alignment(yb.get(), p.y_stride, p.batch, 2);
    const Plan& plan = plan_for(p, bias);
    if (bias) set_bias(plan.desc, bias);  // this call's vector (the plan may come from the cache)
    lt::check(lt::api().Matmul(st.handle, plan.desc, &alpha, xb.get(), plan.x, yb.get(), plan.y, &beta, d, plan.d, d, plan.d,
                               &plan.algo, st.workspace, kWorkspaceBytes, s),
              "cublasLtMatmul");
    return;
  }
  p.align_x = alignment(x, p.x_stride, p.batch, elem);
  p.align_y = alignment(y, p.y_stride, p.batch, elem);
  const Plan& plan = plan_for(p, bias);
  if (bias) set_bias(plan.desc, bias);
  lt::check(lt::api().Matmul(st.handle, plan.desc, &alpha, x, plan.x, y, plan.y, &beta, d, plan.d, d, plan.d, &plan.algo,
                             st.workspace, kWorkspaceBytes, s),
            "cublasLtMatmul");
}

}  // namespace

void set_matmul_precision(MatmulPrecision p) { g_precision = p; }
MatmulPrecision matmul_precision() { return g_precision; }

size_t cublaslt_version() { return lt::api().GetVersion(); }

void matmul(DType t, const void* a_, const Dims& a_shape, const void* b_, const Dims& b_shape, bool trans_a, bool trans_b,
            const Dims& batch_shape, int64_t m, int64_t n, int64_t k, void* c_, cudaStream_t s, const void* bias) {
  if (t != DType::F32 && t != DType::BF16) fail(std::string("matmul: needs float32 or bfloat16 storage, got ") + dtype_name(t));
  const int64_t batch = product(batch_shape);
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {
    if (bias) fail("matmul: a bias needs k > 0");
    launch_fill(c_, t, 0.0, batch * m * n, s);
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

  if (outer_batch == 1) {
    p.batch = 1;
    run_problem(p, b, a, c, bias, s);
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
    run_problem(p, b + ob * elem, a + oa * elem, c + oc * elem, bias, s);
  }
}

}  // namespace ln
