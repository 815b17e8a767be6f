// Elements in 16-byte pieces (one vector load or store each), for memory-bound kernels over float32 or
// bfloat16: Pack<T> converts a piece to and from float; load_piece and store_piece move one piece, load8
// and store8 8 elements of either type (for kernels that mix the two).
#pragma once

#include <cstdint>
#include <initializer_list>

#include <cuda_bf16.h>

namespace ln {

// 16 bytes: 4 float32 or 8 bfloat16 elements.
template <typename T>
struct Pack;

template <>
struct Pack<float> {
  static constexpr int kN = 4;
  __device__ __forceinline__ static void unpack(const uint4& p, float (&f)[kN]) {
    f[0] = __uint_as_float(p.x);
    f[1] = __uint_as_float(p.y);
    f[2] = __uint_as_float(p.z);
    f[3] = __uint_as_float(p.w);
  }
  __device__ __forceinline__ static uint4 pack(const float (&f)[kN]) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
  }
};

template <>
struct Pack<__nv_bfloat16> {
  static constexpr int kN = 8;
  // a bfloat16 is the high half of the float32 of the same value; the lower address holds the lower half
  __device__ __forceinline__ static void unpack(const uint4& p, float (&f)[kN]) {
    const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
  // rounds to nearest even, as stf does
  __device__ __forceinline__ static uint32_t pair(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ static uint4 pack(const float (&f)[kN]) {
    return make_uint4(pair(f[0], f[1]), pair(f[2], f[3]), pair(f[4], f[5]), pair(f[6], f[7]));
  }
};

// N consecutive float32 from a 16-byte aligned address.
template <int N>
__device__ __forceinline__ void load_f32(const float* __restrict__ p, float (&f)[N]) {
#pragma unroll
  for (int i = 0; i < N / 4; i++) {
    const float4 v = reinterpret_cast<const float4*>(p)[i];
    f[4 * i] = v.x;
    f[4 * i + 1] = v.y;
    f[4 * i + 2] = v.z;
    f[4 * i + 3] = v.w;
  }
}

// One 16-byte piece (Pack<T>::kN elements) at a 16-byte aligned address, as float: consecutive threads
// reading consecutive pieces is the best pattern for kernels over one element type.
template <typename T>
__device__ __forceinline__ void load_piece(const T* __restrict__ p, float (&f)[Pack<T>::kN]) {
  Pack<T>::unpack(*reinterpret_cast<const uint4*>(p), f);
}

template <typename T>
__device__ __forceinline__ void store_piece(T* __restrict__ p, const float (&f)[Pack<T>::kN]) {
  *reinterpret_cast<uint4*>(p) = Pack<T>::pack(f);
}

// 8 elements at a 16-byte aligned address (two pieces of float32, one of bfloat16), as float.
template <typename T>
__device__ __forceinline__ void load8(const T* __restrict__ p, float (&f)[8]) {
  if constexpr (sizeof(T) == 4) {
    load_f32(reinterpret_cast<const float*>(p), f);
  } else {
    Pack<__nv_bfloat16>::unpack(*reinterpret_cast<const uint4*>(p), f);
  }
}

template <typename T>
__device__ __forceinline__ void store8(T* __restrict__ p, const float (&f)[8]) {
  if constexpr (sizeof(T) == 4) {
    auto* q = reinterpret_cast<float4*>(p);
    q[0] = make_float4(f[0], f[1], f[2], f[3]);
    q[1] = make_float4(f[4], f[5], f[6], f[7]);
  } else {
    *reinterpret_cast<uint4*>(p) = Pack<__nv_bfloat16>::pack(f);
  }
}

// Whether every pointer can be read 16 bytes at a time.
inline bool vector_aligned(std::initializer_list<const void*> ps) {
  for (const void* p : ps) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

}  // namespace ln
