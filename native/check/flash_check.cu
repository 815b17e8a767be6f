// Kernel-level check and timing of the fused dilated attention, without Node: the fused bf16 kernels
// against the exact float32 kernels on the same (bf16-rounded) inputs, then forward and backward timings.
// Built and run on the GPU machine by scripts/device-flash-check.sh.
//
//   flash_check check <N> <H> <D> <causal 0|1> <w0> <r0> [<w1> <r1> ...]
//   flash_check time  <N> <H> <D> <causal 0|1> <w0> <r0> [...]
//   flash_check wgmma   (one warpgroup's S = Q K^T and O = P V through the wgmma wrappers, against the CPU)
// LONGNET_FLASH_FORWARD=mma times the mma.sync forward where the wgmma one would run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>

#include "../src/device.h"
#include "../src/kernels/attention.h"
#include "../src/kernels/attention_dsum.h"
#include "../src/kernels/flash_attention.h"
#include "../src/kernels/flash_attention_mma.cuh"
#include "../src/kernels/wgmma.cuh"

using namespace ln;

namespace {

template <typename T>
T* device_alloc(size_t n) {
  void* p = nullptr;
  check_cuda(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  return static_cast<T*>(p);
}

std::vector<float> download(const float* d, size_t n) {
  std::vector<float> h(n);
  check_cuda(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return h;
}

// Random bf16 values and their exact float32 copies.
void random_bf16(size_t n, std::mt19937& rng, std::vector<__nv_bfloat16>& bits, std::vector<float>& values) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  bits.resize(n);
  values.resize(n);
  for (size_t i = 0; i < n; i++) {
    bits[i] = __float2bfloat16(dist(rng));
    values[i] = __bfloat162float(bits[i]);
  }
}

// ||a - b|| / ||b|| over the finite entries of b; NaN anywhere in a, or a finite/infinite mismatch, is reported as NaN.
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); i++) {
    if (std::isnan(a[i])) return NAN;
    if (std::isinf(b[i]) || std::isinf(a[i])) {
      if (a[i] != b[i]) return NAN;
      continue;
    }
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Args {
  std::string mode;
  AttentionShape shape{};
  AttentionOptions opt{};
};

Args parse(int argc, char** argv) {
  if (argc < 8 || (argc - 6) % 2) {
    std::fprintf(stderr, "usage: flash_check check|time N H D causal w0 r0 [w1 r1 ...]\n");
    std::exit(2);
  }
  Args a;
  a.mode = argv[1];
  a.shape.batch = 1;
  a.shape.seq = std::atoll(argv[2]);
  a.shape.heads = std::atoi(argv[3]);
  a.shape.head_dim = std::atoi(argv[4]);
  a.opt.causal = std::atoi(argv[5]) != 0;
  a.opt.scale = 1.0f / std::sqrt(float(a.shape.head_dim));
  a.opt.blocked_offsets = false;
  for (int i = 6; i + 1 < argc; i += 2) a.opt.patterns.push_back({std::atoll(argv[i]), std::atoll(argv[i + 1])});
  return a;
}

int check(const Args& a) {
  const AttentionShape& sh = a.shape;
  const size_t rows = size_t(sh.batch * sh.seq * sh.heads), n = rows * sh.head_dim;
  std::mt19937 rng(12345 + unsigned(sh.seq));
  std::vector<__nv_bfloat16> qb, kb, vb, db;
  std::vector<float> qf, kf, vf, df;
  random_bf16(n, rng, qb, qf);
  random_bf16(n, rng, kb, kf);
  random_bf16(n, rng, vb, vf);
  random_bf16(n, rng, db, df);

  auto* q16 = device_alloc<__nv_bfloat16>(n);
  auto* k16 = device_alloc<__nv_bfloat16>(n);
  auto* v16 = device_alloc<__nv_bfloat16>(n);
  auto* d16 = device_alloc<__nv_bfloat16>(n);
  check_cuda(cudaMemcpy(q16, qb.data(), n * 2, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(k16, kb.data(), n * 2, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(v16, vb.data(), n * 2, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(d16, db.data(), n * 2, cudaMemcpyHostToDevice), "upload");
  float *q32 = device_alloc<float>(n), *k32 = device_alloc<float>(n), *v32 = device_alloc<float>(n), *d32 = device_alloc<float>(n);
  check_cuda(cudaMemcpy(q32, qf.data(), n * 4, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(k32, kf.data(), n * 4, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(v32, vf.data(), n * 4, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(d32, df.data(), n * 4, cudaMemcpyHostToDevice), "upload");

  float *o_ref = device_alloc<float>(n), *l_ref = device_alloc<float>(rows);
  float *dq_ref = device_alloc<float>(n), *dk_ref = device_alloc<float>(n), *dv_ref = device_alloc<float>(n);
  launch_attention_forward(q32, k32, v32, o_ref, l_ref, sh, a.opt, stream());
  launch_attention_backward(q32, k32, v32, o_ref, l_ref, d32, dq_ref, dk_ref, dv_ref, sh, a.opt, stream());

  // Dsum from the reference output, as the training path computes it from its float32 o.
  const std::vector<float> o_host = download(o_ref, n);
  std::vector<float> dsum_host(rows);
  for (size_t r = 0; r < rows; r++) {
    double s = 0;
    for (int d = 0; d < sh.head_dim; d++) s += double(o_host[r * sh.head_dim + d]) * df[r * sh.head_dim + d];
    dsum_host[r] = float(s);
  }
  float* dsum = device_alloc<float>(rows);
  check_cuda(cudaMemcpy(dsum, dsum_host.data(), rows * 4, cudaMemcpyHostToDevice), "upload");

  // Poison every output: the kernels must overwrite all of it.
  float *o = device_alloc<float>(n), *l = device_alloc<float>(rows);
  float *dq = device_alloc<float>(n), *dk = device_alloc<float>(n), *dv = device_alloc<float>(n);
  for (auto [p, m] : {std::pair{o, n}, {l, rows}, {dq, n}, {dk, n}, {dv, n}}) check_cuda(cudaMemset(p, 0xff, m * 4), "poison");
  launch_flash_attention_forward(q16, k16, v16, o, l, sh, a.opt, stream());
  launch_flash_attention_backward(q16, k16, v16, d16, l_ref, dsum, dq, dk, dv, sh, a.opt, stream());
  synchronize();

  // The same forward as packed problems: each (pattern, batch, head, segment) split in two halves of
  // queries, the second seeing every earlier key (a causal shift), merged pattern by pattern; into an
  // fp32 output and a bf16 one.
  float *o2 = device_alloc<float>(n), *l2 = device_alloc<float>(rows), *l3 = device_alloc<float>(rows);
  auto* o3 = device_alloc<__nv_bfloat16>(n);
  check_cuda(cudaMemset(o2, 0, n * 4), "memset");
  check_cuda(cudaMemset(o3, 0, n * 2), "memset");
  std::vector<float> minus_inf(rows, -INFINITY);
  check_cuda(cudaMemcpy(l2, minus_inf.data(), rows * 4, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(l3, minus_inf.data(), rows * 4, cudaMemcpyHostToDevice), "upload");
  for (const auto& pat : a.opt.patterns) {
    std::vector<FlashProblem> problems;
    const int64_t w = std::min<int64_t>(pat.segment, sh.seq);
    for (int64_t b = 0; b < sh.batch; b++)
      for (int h = 0; h < sh.heads; h++)
        for (int64_t start = 0; start < sh.seq; start += w) {
          const int64_t off = h % pat.dilation, len = std::min(w, sh.seq - start);
          const int64_t sel = len > off ? (len - off + pat.dilation - 1) / pat.dilation : 0;
          const int64_t row0 = (b * sh.seq + start + off) * sh.heads + h, stride = pat.dilation * sh.heads, half = sel / 2;
          problems.push_back({row0, stride, half, row0, stride, a.opt.causal ? half : sel});
          problems.push_back({row0 + half * stride, stride, sel - half, row0, stride, sel});
        }
    launch_flash_problems_forward(q16, k16, v16, o2, DType::F32, l2, problems, sh.head_dim, a.opt.causal, a.opt.scale, stream());
    launch_flash_problems_forward(q16, k16, v16, o3, DType::BF16, l3, problems, sh.head_dim, a.opt.causal, a.opt.scale, stream());
  }
  synchronize();
  std::vector<__nv_bfloat16> o3_host(n);
  check_cuda(cudaMemcpy(o3_host.data(), o3, n * 2, cudaMemcpyDeviceToHost), "download");
  std::vector<float> o3_float(n);
  for (size_t i = 0; i < n; i++) o3_float[i] = __bfloat162float(o3_host[i]);

  const double ep = rel_error(download(o2, n), download(o, n)), elp = rel_error(download(l2, rows), download(l, rows));
  const double eb = rel_error(o3_float, o_host), elb = rel_error(download(l3, rows), download(l_ref, rows));
  const double eo = rel_error(download(o, n), o_host), el = rel_error(download(l, rows), download(l_ref, rows));
  const double eq = rel_error(download(dq, n), download(dq_ref, n)), ek = rel_error(download(dk, n), download(dk_ref, n));
  const double ev = rel_error(download(dv, n), download(dv_ref, n));
  const double worst = std::max({eo, el, eq, ek, ev, eb, elb});
  const bool ok = !std::isnan(eo + el + eq + ek + ev + ep + elp + eb + elb) && worst < 2e-2 && ep < 1e-5 && elp < 1e-5;
  std::printf(
      "check N=%lld H=%d D=%d causal=%d patterns=%zu  o %.2e  lse %.2e  dq %.2e  dk %.2e  dv %.2e  | packed vs fused o %.1e lse %.1e"
      "  bf16 o %.2e lse %.1e  %s\n",
      (long long)sh.seq, sh.heads, sh.head_dim, int(a.opt.causal), a.opt.patterns.size(), eo, el, eq, ek, ev, ep, elp, eb, elb,
      ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

// Uniform values in [-2, 2) from a hash of the index: device-side, so that large inputs cost no host time.
__global__ void fill_uniform(__nv_bfloat16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ (uint32_t(i >> 32) + seed) * 2246822519u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16(float(h >> 8) * (4.0f / 16777216.0f) - 2.0f);
  }
}

// Median of `reps` timings of f, in ms.
template <typename F>
float median_ms(int reps, F&& f) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> t;
  for (int i = 0; i < reps + 2; i++) {
    cudaEventRecord(start, stream());
    f();
    cudaEventRecord(stop, stream());
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i >= 2) t.push_back(ms);  // the first two warm up
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int time_it(const Args& a) {
  const AttentionShape& sh = a.shape;
  const size_t rows = size_t(sh.batch * sh.seq * sh.heads), n = rows * sh.head_dim;
  auto* q = device_alloc<__nv_bfloat16>(n);
  auto* k = device_alloc<__nv_bfloat16>(n);
  auto* v = device_alloc<__nv_bfloat16>(n);
  auto* d_o = device_alloc<__nv_bfloat16>(n);
  uint32_t seed = 1;
  for (auto* p : {q, k, v, d_o}) fill_uniform<<<4096, 256, 0, stream()>>>(p, n, seed++);
  check_launch("fill_uniform");
  float *o = device_alloc<float>(n), *l = device_alloc<float>(rows), *dsum = device_alloc<float>(rows);
  float *dq = device_alloc<float>(n), *dk = device_alloc<float>(n), *dv = device_alloc<float>(n);
  // Dsum of this o and dO, so that the backward sees the values a training step gives it.
  launch_flash_attention_forward(q, k, v, o, l, sh, a.opt, stream());
  launch_attention_dsum(o, DType::F32, d_o, DType::BF16, dsum, int64_t(rows), sh.head_dim, stream());
  const float fwd = median_ms(7, [&] { launch_flash_attention_forward(q, k, v, o, l, sh, a.opt, stream()); });
  const float bwd = median_ms(7, [&] { launch_flash_attention_backward(q, k, v, d_o, l, dsum, dq, dk, dv, sh, a.opt, stream()); });
  // Both in one timed region, as a training step (and bench/gpu-dilated-attention.ts) runs them.
  const float both = median_ms(7, [&] {
    launch_flash_attention_forward(q, k, v, o, l, sh, a.opt, stream());
    launch_flash_attention_backward(q, k, v, d_o, l, dsum, dq, dk, dv, sh, a.opt, stream());
  });
  double flops = 0;  // causal forward FLOPs of the schedule (docs/ATTENTION.md), halved back to full when not causal
  for (const auto& p : a.opt.patterns) {
    const double w = double(std::min<int64_t>(p.segment, sh.seq)), sel = w / double(p.dilation);
    flops += sh.heads * (double(sh.seq) / w) * 2.0 * sel * sel * sh.head_dim * (a.opt.causal ? 1.0 : 2.0);
  }
  const double total = fwd + bwd;
  std::printf("time N=%lld H=%d D=%d causal=%d  fwd %.3f ms  bwd %.3f ms  fwd+bwd %.1f ns/token  fwd %.0f TFLOP/s  fwd+bwd %.0f TFLOP/s"
              "  (in one region: %.3f ms, %.1f ns/token)\n",
              (long long)sh.seq, sh.heads, sh.head_dim, int(a.opt.causal), fwd, bwd, total * 1e6 / double(sh.seq),
              flops / (fwd * 1e-3) / 1e12, 3.5 * flops / (total * 1e-3) / 1e12, both, both * 1e6 / double(sh.seq));
  return 0;
}


// One warpgroup: s = Q K^T (64 x 128 over 64, both K-major) and o = bf16(s) V (64 x 64 over 128 keys, V
// MN-major), written out in the accumulator layout that wgmma.cuh describes.
__global__ void wgmma_unit(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, float* s_out, float* o_out) {
#if defined(LN_HAVE_WGMMA)
  using namespace ln::flash;
  using namespace ln::flash::wg;  // the products and the loader; fence/commit/wait named in full
  __shared__ __align__(1024) __nv_bfloat16 qs[64 * 64], ks[128 * 64], vs[128 * 64];
  load_rows_sw128<64, 128>(qs, q, 0, 1, 64, 0);
  load_rows_sw128<128, 128>(ks, k, 0, 1, 128, 0);
  load_rows_sw128<128, 128>(vs, v, 0, 1, 128, 0);
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint64_t qd = desc_kmajor(smem_address(qs)), kd = desc_kmajor(smem_address(ks));
  const uint64_t vd = make_desc(smem_address(vs), 128 * 128, 1024);
  float s[64], o[32];
  wg::fence();
  for (int kk = 0; kk < 4; kk++) mma_ss_n128<0, 0>(s, desc_plus(qd, kk * 32), desc_plus(kd, kk * 32), kk > 0);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(s);
  uint32_t p[8][4];
  for (int kk = 0; kk < 8; kk++)
    for (int i = 0; i < 4; i++) p[kk][i] = pack_bf16(s[8 * kk + 2 * i], s[8 * kk + 2 * i + 1]);
  for (int i = 0; i < 32; i++) o[i] = 0.0f;
  wg::fence();
  for (int kk = 0; kk < 8; kk++) mma_rs_n64<1>(o, p[kk], desc_plus(vd, kk * 2048));
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(o);
  for (int n = 0; n < 16; n++)
    for (int e = 0; e < 4; e++) {
      const int row = 16 * warp + lane / 4 + 8 * (e / 2), col = 8 * n + 2 * (lane % 4) + (e & 1);
      s_out[row * 128 + col] = s[4 * n + e];
      if (n < 8) o_out[row * 64 + col] = o[4 * n + e];
    }
#endif
}

int wgmma_check() {
  if (device_info().major != 9) {
    std::printf("wgmma unit: skipped (not a Hopper GPU)\n");
    return 0;
  }
  std::mt19937 rng(7);
  std::vector<__nv_bfloat16> qb, kb, vb;
  std::vector<float> qf, kf, vf;
  random_bf16(64 * 64, rng, qb, qf);
  random_bf16(128 * 64, rng, kb, kf);
  random_bf16(128 * 64, rng, vb, vf);
  auto* q = device_alloc<__nv_bfloat16>(64 * 64);
  auto* k = device_alloc<__nv_bfloat16>(128 * 64);
  auto* v = device_alloc<__nv_bfloat16>(128 * 64);
  check_cuda(cudaMemcpy(q, qb.data(), 64 * 64 * 2, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(k, kb.data(), 128 * 64 * 2, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(v, vb.data(), 128 * 64 * 2, cudaMemcpyHostToDevice), "upload");
  float *s = device_alloc<float>(64 * 128), *o = device_alloc<float>(64 * 64);
  check_cuda(cudaMemset(s, 0xff, 64 * 128 * 4), "poison");
  check_cuda(cudaMemset(o, 0xff, 64 * 64 * 4), "poison");
  wgmma_unit<<<1, 128>>>(q, k, v, s, o);
  check_launch("wgmma_unit");
  check_cuda(cudaDeviceSynchronize(), "wgmma_unit");
  const std::vector<float> sh = download(s, 64 * 128), oh = download(o, 64 * 64);
  std::vector<float> s_ref(64 * 128), o_ref(64 * 64);
  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 128; j++) {
      double a = 0;
      for (int d = 0; d < 64; d++) a += double(qf[i * 64 + d]) * kf[j * 64 + d];
      s_ref[i * 128 + j] = float(a);
    }
  for (int i = 0; i < 64; i++)
    for (int c = 0; c < 64; c++) {
      double a = 0;
      for (int j = 0; j < 128; j++) a += double(__bfloat162float(__float2bfloat16(sh[i * 128 + j]))) * vf[j * 64 + c];
      o_ref[i * 64 + c] = float(a);
    }
  const double es = rel_error(sh, s_ref), eo = rel_error(oh, o_ref);
  const bool ok = es < 1e-5 && eo < 1e-5;
  std::printf("wgmma unit: S = Q K^T %.2e  O = P V %.2e  %s\n", es, eo, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}

// The three operand forms of the wgmma backward on random matrices, one warpgroup:
//   c1 = X[0:64] Y^T (both K-major), c2 = X[0:64] Y (A in registers, Y MN-major),
//   c3 = X^T X[:, 32:64] over all 128 rows of X (A MN-major, B MN-major 32 wide at a 64-byte offset).
__global__ void wgmma_backward_unit_kernel(const __nv_bfloat16* x, const __nv_bfloat16* y, float* c1, float* c2, float* c3) {
  __shared__ __align__(1024) unsigned char xs[3 * 8192];
  unsigned char* ys = xs + 2 * 8192;
  for (int i = threadIdx.x; i < 128 * 8; i += 128) flash::cp_async16(xs + flash::wg::swz(i / 8, i % 8), x + i * 8, true);
  for (int i = threadIdx.x; i < 64 * 8; i += 128) flash::cp_async16(ys + flash::wg::swz(i / 8, i % 8), y + i * 8, true);
  flash::cp_async_commit();
  flash::cp_async_wait<0>();
  flash::wg::fence_proxy_async();
  __syncthreads();
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const uint32_t xa = flash::smem_address(xs), ya = flash::smem_address(ys);
  float d1[32], d2[32], d3[16];
  for (int i = 0; i < 32; i++) d2[i] = 0.0f;
  uint32_t a[4][4];
  for (int kk = 0; kk < 4; kk++)
    for (int h = 0; h < 4; h++) {
      const int row = 16 * w + g + 8 * (h % 2), col = 16 * kk + 8 * (h / 2) + 2 * c;
      __nv_bfloat162 pr;
      pr.x = x[row * 64 + col];
      pr.y = x[row * 64 + col + 1];
      a[kk][h] = *reinterpret_cast<uint32_t*>(&pr);
    }
  flash::wg::fence();
  for (int kk = 0; kk < 4; kk++) flash::wg::mma_ss_n64<0, 0>(d1, flash::wg::desc_kmajor(xa + kk * 32), flash::wg::desc_kmajor(ya + kk * 32), kk);
  for (int kk = 0; kk < 4; kk++) flash::wg::mma_rs_n64<1>(d2, a[kk], flash::wg::desc_mnmajor(ya + kk * 2048));
  for (int kk = 0; kk < 8; kk++)
    flash::wg::mma_ss_n32<1, 1>(d3, flash::wg::desc_mnmajor(xa + kk * 2048), flash::wg::desc_mnmajor(xa + kk * 2048 + 64), kk);
  flash::wg::commit();
  flash::wg::wait<0>();
  flash::wg::fence_operand(d1);
  flash::wg::fence_operand(d2);
  flash::wg::fence_operand(d3);
  for (int n = 0; n < 8; n++)
    for (int e = 0; e < 4; e++) {
      const int row = 16 * w + g + 8 * (e / 2), col = 8 * n + 2 * c + (e % 2);
      c1[row * 64 + col] = d1[4 * n + e];
      c2[row * 64 + col] = d2[4 * n + e];
      if (n < 4) c3[row * 32 + col] = d3[4 * n + e];
    }
}

int wgmma_backward_unit() {
  std::mt19937 rng(7);
  std::vector<__nv_bfloat16> xb, yb;
  std::vector<float> xf, yf;
  random_bf16(128 * 64, rng, xb, xf);
  random_bf16(64 * 64, rng, yb, yf);
  auto* x = device_alloc<__nv_bfloat16>(128 * 64);
  auto* y = device_alloc<__nv_bfloat16>(64 * 64);
  check_cuda(cudaMemcpy(x, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice), "upload");
  check_cuda(cudaMemcpy(y, yb.data(), yb.size() * 2, cudaMemcpyHostToDevice), "upload");
  float *c1 = device_alloc<float>(4096), *c2 = device_alloc<float>(4096), *c3 = device_alloc<float>(2048);
  wgmma_backward_unit_kernel<<<1, 128>>>(x, y, c1, c2, c3);
  check_launch("wgmma_backward_unit_kernel");
  synchronize();
  std::vector<float> r1(4096), r2(4096), r3(2048);
  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 64; j++) {
      double a = 0, b = 0;
      for (int k = 0; k < 64; k++) {
        a += double(xf[i * 64 + k]) * yf[j * 64 + k];
        b += double(xf[i * 64 + k]) * yf[k * 64 + j];
      }
      r1[i * 64 + j] = float(a);
      r2[i * 64 + j] = float(b);
    }
  for (int m = 0; m < 64; m++)
    for (int n = 0; n < 32; n++) {
      double a = 0;
      for (int k = 0; k < 128; k++) a += double(xf[k * 64 + m]) * xf[k * 64 + 32 + n];
      r3[m * 32 + n] = float(a);
    }
  const double e1 = rel_error(download(c1, 4096), r1), e2 = rel_error(download(c2, 4096), r2), e3 = rel_error(download(c3, 2048), r3);
  const bool ok = e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5;
  std::printf("wgmma unit: ss k-major %.2e  rs mn-major %.2e  ss mn-major n32 %.2e  %s\n", e1, e2, e3, ok ? "ok" : "FAIL");
  return ok ? 0 : 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "wgmma") {
    try {
      init_device(0);
      // the forward's operand forms, then the backward's
      const int forward = wgmma_check();
      if (device_info().major != 9) return forward;
      return wgmma_backward_unit() | forward;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "flash_check: %s\n", e.what());
      return 1;
    }
  }
  const Args a = parse(argc, argv);
  try {
    init_device(0);
    return a.mode == "check" ? check(a) : time_it(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flash_check: %s\n", e.what());
    return 1;
  }
}
