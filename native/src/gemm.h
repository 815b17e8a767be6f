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
// products with fp32 accumulation, the result rounded to bf16 once).
void matmul(DType t, const void* a, const std::vector<int64_t>& a_shape, const void* b, const std::vector<int64_t>& b_shape,
            bool trans_a, bool trans_b, const std::vector<int64_t>& batch_shape, int64_t m, int64_t n, int64_t k, void* c,
            cudaStream_t s, const void* bias = nullptr);

// The loaded cuBLASLt version (e.g. 130000), loading it if needed.
size_t cublaslt_version();

}  // namespace ln
