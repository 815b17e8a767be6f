// Batched matrix products through cuBLASLt, row-major, with transposes and broadcast batch dimensions.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "common.h"

namespace ln {

// How float32 products use the tensor cores: not at all, TF32 inputs, or bf16 inputs (fp32 accumulation always).
enum class MatmulPrecision : int { FP32 = 0, TF32 = 1, BF16 = 2 };
void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();

// c[...batch, m, n] = op(a) op(b), where a is [...batchA, m, k] ([..., k, m] when trans_a), b likewise;
// the batch dimensions of a and b broadcast to batch_shape (the CPU backend's matmul). A non-null bias [n]
// is added to every row of c in cuBLASLt's epilogue (k must be positive). Every operand, c and the bias
// are of storage type t: float32 (products in the precision set above) or bfloat16 (bf16 tensor-core
// products with fp32 accumulation, the result rounded to bf16 once). A non-null addend of c's shape (a
// residual) is added to the product before that rounding (cuBLASLt's C, beta = 1; it may be c itself).
void matmul(DType t, const void* a, const std::vector<int64_t>& a_shape, const void* b, const std::vector<int64_t>& b_shape,
            bool trans_a, bool trans_b, const std::vector<int64_t>& batch_shape, int64_t m, int64_t n, int64_t k, void* c,
            cudaStream_t s, const void* bias = nullptr, const void* addend = nullptr);

// A linear layer's weight gradient dW[out, in] = dy^T x from dy [rows, out] and x [rows, in] of storage
// type t, and, when db is not null, its bias gradient db[out] = dy's sums over rows: of type out_t, t or
// float32 for bf16 operands (float32 master weights), written from the product's fp32 accumulators.
void weight_gradient(DType t, const void* dy, const void* x, int64_t rows, int64_t in, int64_t out, DType out_t, void* dw,
                     void* db, cudaStream_t s);

// y = gelu(x W^T + bias) (the tanh form) and pre = x W^T + bias, for x [rows, in], W [out, in] and bias
// [out], all of storage type t: one product whose epilogue writes both where cuBLASLt has one for the
// problem, else the product, then the gelu kernel.
void linear_gelu(DType t, const void* x, const void* w, const void* bias, int64_t rows, int64_t in, int64_t out, void* y,
                 void* pre, cudaStream_t s);

// The loaded cuBLASLt version (e.g. 130000), loading it if needed.
size_t cublaslt_version();

}  // namespace ln
