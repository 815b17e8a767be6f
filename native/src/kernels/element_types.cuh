// Element access for kernels templated on their storage type: float32 or bfloat16 storage, float arithmetic.
#pragma once

#include <string>
#include <type_traits>

#include <cuda_bf16.h>

#include "../common.h"

namespace ln {

__device__ __forceinline__ float ldf(float v) { return v; }
__device__ __forceinline__ float ldf(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void stf(float& d, float v) { d = v; }
__device__ __forceinline__ void stf(__nv_bfloat16& d, float v) { d = __float2bfloat16_rn(v); }

// Calls f with a null pointer of the element type of `t` (float or __nv_bfloat16); other types fail.
template <typename F>
void float_typed(DType t, const char* what, F&& f) {
  if (t == DType::F32) return f(static_cast<float*>(nullptr));
  if (t == DType::BF16) return f(static_cast<__nv_bfloat16*>(nullptr));
  fail(std::string(what) + ": needs float32 or bfloat16 storage, got " + dtype_name(t));
}

template <typename P>
using element_of = std::remove_pointer_t<P>;

}  // namespace ln
