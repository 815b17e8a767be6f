// Dsum = rowsum(dO * O): the per-row term of the attention backward (docs/ATTENTION.md), for the fused
// kernels that take it precomputed (flash_attention.h).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common.h"

namespace ln {

// dsum[row] = sum_d o[row, d] * d_o[row, d] for rows [0, rows) of `dim` contiguous elements, accumulated in
// float32. o and d_o are each F32 or BF16 (independently); throws for other element types.
void launch_attention_dsum(const void* o, DType o_type, const void* d_o, DType do_type, float* dsum, int64_t rows, int dim,
                           cudaStream_t s);

}  // namespace ln
