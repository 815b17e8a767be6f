#include "random.h"

#include <cuda_bf16.h>

#include "launch_util.cuh"

namespace ln {

namespace {

// The 64-bit finaliser of SplitMix: a bijection whose output bits each depend on every input bit.
__host__ __device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

// Two independent standard normals from pair index `pair` (Box-Muller on two 24-bit uniforms).
__device__ __forceinline__ float2 normal_pair(uint64_t key, uint64_t pair) {
  const uint64_t bits = mix64(key + (pair + 1) * kGolden);
  // u1 in (0, 1]: never 0, so the log is finite; u2 in [0, 1)
  const float u1 = (float(uint32_t(bits >> 40)) + 1.0f) * 0x1p-24f;
  const float u2 = float(uint32_t(bits >> 8) & 0xffffffu) * 0x1p-24f;
  const float radius = sqrtf(-2.0f * logf(u1));
  float sn, cs;
  sincospif(2.0f * u2, &sn, &cs);
  return make_float2(radius * cs, radius * sn);
}

template <typename T>
__device__ __forceinline__ void store_pair(T* x, int64_t i, int64_t n, float2 v);

template <>
__device__ __forceinline__ void store_pair<float>(float* x, int64_t i, int64_t n, float2 v) {
  if (i + 1 < n) *reinterpret_cast<float2*>(x + i) = v;  // i is even: 8-byte aligned
  else x[i] = v.x;
}

template <>
__device__ __forceinline__ void store_pair<__nv_bfloat16>(__nv_bfloat16* x, int64_t i, int64_t n, float2 v) {
  if (i + 1 < n) *reinterpret_cast<__nv_bfloat162*>(x + i) = __floats2bfloat162_rn(v.x, v.y);  // 4-byte aligned
  else x[i] = __float2bfloat16_rn(v.x);
}

// Thread t handles pairs t, t + stride, ...: elements 2p and 2p + 1 take the two normals of pair p.
template <typename T>
__global__ void random_normal_kernel(T* __restrict__ x, int64_t n, uint64_t key, float stddev) {
  const int64_t pairs = (n + 1) / 2;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += stride) {
    float2 v = normal_pair(key, uint64_t(p));
    v.x *= stddev;
    v.y *= stddev;
    store_pair<T>(x, 2 * p, n, v);
  }
}

}  // namespace

void launch_fill_random_normal(void* x, DType t, int64_t n, uint64_t seed, float stddev, cudaStream_t s) {
  if (n < 0) throw RangeError("fillRandomNormal: negative size");
  if (n == 0) return;
  // the seed goes through the mixer first, so that nearby seeds give unrelated streams
  const uint64_t key = mix64(seed ^ 0x6a09e667f3bcc909ull);
  const unsigned blocks = grid_for((n + 1) / 2);
  switch (t) {
    case DType::F32:
      random_normal_kernel<float><<<blocks, kThreads, 0, s>>>(static_cast<float*>(x), n, key, stddev);
      break;
    case DType::BF16:
      random_normal_kernel<__nv_bfloat16><<<blocks, kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(x), n, key, stddev);
      break;
    default: throw RangeError(std::string("fillRandomNormal: storage must be float32 or bfloat16, got ") + dtype_name(t));
  }
  check_launch("random normal kernel");
}

}  // namespace ln
