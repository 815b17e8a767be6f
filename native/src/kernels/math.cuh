// Scalar functions with the CPU backend's exact definitions (src/backend/cpu/elementwise.ts).
#pragma once

#include <cmath>
#include <type_traits>

namespace ln {

// GELU with the tanh approximation (GPT-2's).
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

__device__ __forceinline__ float gelu(float x) {
  return 0.5f * x * (1.0f + tanhf(kGeluC * (x + kGeluA * x * x * x)));
}

__device__ __forceinline__ float gelu_derivative(float x) {
  const float t = tanhf(kGeluC * (x + kGeluA * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kGeluC * (1.0f + 3.0f * kGeluA * x * x);
}

// Math.pow: unlike C's pow, a NaN exponent always gives NaN, and so does (+-1) ** (+-Infinity).
__device__ __forceinline__ float js_pow(float a, float b) {
  if (isnan(b)) return NAN;
  if (fabsf(a) == 1.0f && isinf(b)) return NAN;
  return powf(a, b);
}

}  // namespace ln
