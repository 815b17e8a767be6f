#include "optimizer.h"

#include "../memory.h"
#include "launch_util.cuh"
#include "vector_access.cuh"

namespace ln {

namespace {

// One element's update (p, m and v in place). Both kernels run exactly this sequence of roundings: the _rn
// intrinsics keep the compiler from fusing multiplies and adds differently in the two kernels, so that they
// agree bit for bit.
__device__ __forceinline__ void adamw_update(float& p, float g, float& m, float& v, const AdamWArgs& a, float decay) {
  const float gi = __fmul_rn(g, a.grad_scale);
  m = __fadd_rn(__fmul_rn(a.beta1, m), __fmul_rn(__fsub_rn(1.0f, a.beta1), gi));
  v = __fadd_rn(__fmul_rn(a.beta2, v), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, a.beta2), gi), gi));
  const float step = __fdiv_rn(__fmul_rn(a.lr, __fdiv_rn(m, a.bias1)), __fadd_rn(__fsqrt_rn(__fdiv_rn(v, a.bias2)), a.eps));
  p = __fsub_rn(__fmul_rn(p, decay), step);
}

__device__ __forceinline__ void adamw_element(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                              float* __restrict__ v, int64_t i, const AdamWArgs& a, float decay,
                                              __nv_bfloat16* __restrict__ copy = nullptr) {
  float pi = p[i], mi = m[i], vi = v[i];
  adamw_update(pi, g[i], mi, vi, a, decay);
  m[i] = mi;
  v[i] = vi;
  p[i] = pi;
  if (copy) copy[i] = __float2bfloat16_rn(pi);
}

__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                             int64_t n, AdamWArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    adamw_element(p, g, m, v, i, a, a.decay);
  }
}

// Elements a block of the multi-tensor kernel updates: kQuads runs of 4 a thread.
constexpr int kQuads = 2;
constexpr int64_t kChunk = int64_t(kThreads) * 4 * kQuads;

// A tensor, the first of its blocks (it has ceil(n / kChunk), up to the next piece's first), and whether
// its four arrays are 16-byte aligned and its copy (if any) 8-byte aligned (then read and written as
// float4, the copy four bfloat16 at a time).
struct Piece {
  AdamWTensor t;
  int64_t first_block;
  bool quads;
};

// Block b finds its tensor by binary search over first_block and updates its chunk of it: all four arrays
// of a thread's runs are read before any is written, so that the loads are in flight together.
__global__ void adamw_multi_kernel(const Piece* __restrict__ pieces, int count, AdamWArgs a) {
  if (a.clip_squares) {
    const float norm = sqrtf(*a.clip_squares);
    if (!isfinite(norm)) return;
    if (a.max_norm > 0.0f && norm > a.max_norm) a.grad_scale = __fmul_rn(a.grad_scale, __fdiv_rn(a.max_norm, __fadd_rn(norm, 1e-6f)));
  }
  int lo = 0, hi = count - 1;
  const int64_t b = blockIdx.x;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (pieces[mid].first_block <= b) lo = mid;
    else hi = mid - 1;
  }
  const AdamWTensor t = pieces[lo].t;
  const int64_t begin = (b - pieces[lo].first_block) * kChunk, end = min(t.n, begin + kChunk);
  if (!pieces[lo].quads || end - begin < kChunk) {
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) adamw_element(t.param, t.grad, t.m, t.v, i, a, t.decay, t.copy);
    return;
  }
  float4 p[kQuads], g[kQuads], m[kQuads], v[kQuads];
#pragma unroll
  for (int j = 0; j < kQuads; j++) {
    const int64_t i = begin + 4 * (threadIdx.x + int64_t(j) * kThreads);
    p[j] = *reinterpret_cast<const float4*>(t.param + i);
    g[j] = *reinterpret_cast<const float4*>(t.grad + i);
    m[j] = *reinterpret_cast<const float4*>(t.m + i);
    v[j] = *reinterpret_cast<const float4*>(t.v + i);
  }
#pragma unroll
  for (int j = 0; j < kQuads; j++) {
    adamw_update(p[j].x, g[j].x, m[j].x, v[j].x, a, t.decay);
    adamw_update(p[j].y, g[j].y, m[j].y, v[j].y, a, t.decay);
    adamw_update(p[j].z, g[j].z, m[j].z, v[j].z, a, t.decay);
    adamw_update(p[j].w, g[j].w, m[j].w, v[j].w, a, t.decay);
    const int64_t i = begin + 4 * (threadIdx.x + int64_t(j) * kThreads);
    *reinterpret_cast<float4*>(t.param + i) = p[j];
    *reinterpret_cast<float4*>(t.m + i) = m[j];
    *reinterpret_cast<float4*>(t.v + i) = v[j];
    if (t.copy) {
      const __nv_bfloat162 lo = __floats2bfloat162_rn(p[j].x, p[j].y), hi = __floats2bfloat162_rn(p[j].z, p[j].w);
      *reinterpret_cast<uint2*>(t.copy + i) = make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
    }
  }
}

}  // namespace

void launch_adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a, cudaStream_t s) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), kThreads, 0, s>>>(param, grad, m, v, n, a);
  check_launch("adamw kernel");
}

void launch_adamw_multi(const std::vector<AdamWTensor>& tensors, const AdamWArgs& a, cudaStream_t s) {
  std::vector<Piece> pieces;
  int64_t blocks = 0;
  for (const AdamWTensor& t : tensors) {
    if (t.n == 0) continue;  // no blocks: a piece without any would break the search
    const bool copy_aligned = reinterpret_cast<uintptr_t>(t.copy) % 8 == 0;
    pieces.push_back({t, blocks, vector_aligned({t.param, t.grad, t.m, t.v}) && copy_aligned});
    blocks += ceil_div(t.n, kChunk);
  }
  if (pieces.empty()) return;
  if (blocks > INT32_MAX) fail("adamw: too many elements for one multi-tensor launch");
  const size_t bytes = pieces.size() * sizeof(Piece);
  const Scratch table(bytes);  // stream-ordered, as the table of the sums of squares
  check_cuda(cudaMemcpyAsync(table.as<Piece>(), pieces.data(), bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
  adamw_multi_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(table.as<Piece>(), static_cast<int>(pieces.size()), a);
  check_launch("adamw multi-tensor kernel");
}

}  // namespace ln
