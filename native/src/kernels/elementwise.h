// Elementwise kernels: unary and binary maps (with broadcasting), fill, cast, finiteness.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common.h"
#include "../strided.h"

namespace ln {

// The same semantics as the CPU backend (src/backend/cpu/elementwise.ts).
enum class UnaryOp : int { Neg, Exp, Log, Sqrt, Rsqrt, Tanh, Abs, Relu, Gelu, Sigmoid, Square, Reciprocal };
enum class BinaryOp : int { Add, Sub, Mul, Div, Maximum, Minimum, Pow, Greater, ReluBackward, GeluBackward };

// Inputs and output of one storage type `t`, float32 or bfloat16 (float arithmetic either way).
void launch_unary(UnaryOp op, DType t, const void* x, void* out, int64_t n, cudaStream_t s);
// `layout` walks the output shape; operand 0 is a, operand 1 is b.
void launch_binary(BinaryOp op, DType t, const void* a, const void* b, void* out, const StridedLayout& layout, int64_t n,
                   cudaStream_t s);
void launch_binary_scalar(BinaryOp op, DType t, const void* a, float scalar, void* out, int64_t n, cudaStream_t s);

void launch_fill(void* out, DType dtype, double value, int64_t n, cudaStream_t s);
void launch_cast(const void* in, DType from, void* out, DType to, int64_t n, cudaStream_t s);
// Sets *flag to 0 when an element is NaN or infinite (the caller sets it to 1 first).
void launch_all_finite(const void* x, DType dtype, int64_t n, int* flag, cudaStream_t s);
// Lowers *flag to `id` (atomicMin) when an element is NaN or infinite; no host wait.
void launch_flag_non_finite(const void* x, DType dtype, int64_t n, int id, int* flag, cudaStream_t s);

}  // namespace ln
