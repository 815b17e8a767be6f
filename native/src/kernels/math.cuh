// Scalar functions with the CPU backend's exact definitions (src/backend/cpu/elementwise.ts).
#pragma once

#include <cmath>
#include <type_traits>

namespace ln {

// GELU with the tanh approximation (GPT-2's): 0.5 x (1 + tanh z), z = c (x + a x^3). Evaluated through
// 1 + tanh z = 2 sigmoid(2z), which float32 computes without the cancellation of 1 + tanh z for x << 0;
// the derivative is then s (1 + 2 x (1 - s) z'), s = sigmoid(2z), z' = c (1 + 3 a x^2).
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

__device__ __forceinline__ float gelu_sigmoid(float x) {
  const float z = kGeluC * (x + kGeluA * x * x * x);
  return 1.0f / (1.0f + expf(-2.0f * z));
}

__device__ __forceinline__ float gelu(float x) { return x * gelu_sigmoid(x); }

__device__ __forceinline__ float gelu_slope(float x, float s) {
  return s * (1.0f + 2.0f * x * (1.0f - s) * kGeluC * (1.0f + 3.0f * kGeluA * x * x));
}

__device__ __forceinline__ float gelu_derivative(float x) { return gelu_slope(x, gelu_sigmoid(x)); }

// 2^x by the MUFU unit alone: exp2f less its fix-ups for results below 2^-126, which flush to zero here.
// For sums and probabilities whose terms that small do not matter.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 1 / x by the MUFU unit alone (0 for an infinite x).
__device__ __forceinline__ float rcp_approx(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The same sigmoid by the fast exponential and reciprocal (ex2.approx and rcp.approx, a few ulps from
// gelu_sigmoid), with the constants folded: s = 1 / (1 + 2^(x (e0 + e1 x^2))), e0 = -2c log2e and
// e1 = a e0; 0 where the exponential overflows, as it should be. The derivative then is
// s + s (1 - s) x (2c + 6ca x^2). For kernels whose pace the GELU's arithmetic would otherwise set (layer
// norm of gelu(x)): about ten instructions and two MUFU operations for both.
constexpr float kGeluE0 = -2.0f * kGeluC * 1.4426950408889634f, kGeluE1 = kGeluA * kGeluE0;
constexpr float kGeluD0 = 2.0f * kGeluC, kGeluD1 = 6.0f * kGeluC * kGeluA;

__device__ __forceinline__ float gelu_sigmoid_fast(float x, float x2) {
  return rcp_approx(1.0f + exp2_ftz(x * fmaf(x2, kGeluE1, kGeluE0)));
}

__device__ __forceinline__ float gelu_fast(float x) { return x * gelu_sigmoid_fast(x, x * x); }

// gelu(x) and its derivative from one fast sigmoid.
__device__ __forceinline__ void gelu_fast_with_derivative(float x, float& value, float& derivative) {
  const float x2 = x * x;
  const float s = gelu_sigmoid_fast(x, x2);
  value = x * s;
  derivative = fmaf(fmaf(-s, s, s), x * fmaf(x2, kGeluD1, kGeluD0), s);
}

// Math.pow: unlike C's pow, a NaN exponent always gives NaN, and so does (+-1) ** (+-Infinity).
__device__ __forceinline__ float js_pow(float a, float b) {
  if (isnan(b)) return NAN;
  if (fabsf(a) == 1.0f && isinf(b)) return NAN;
  return powf(a, b);
}

}  // namespace ln
