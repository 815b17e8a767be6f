// Layer norm over the rows of [rows, cols]. Semantics follow src/backend/cpu/nn.ts.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common.h"

namespace ln {

// x, y, dy and dx are float32 or bfloat16 storage `t` (float arithmetic); gamma, beta, d_gamma, d_beta,
// mean and rstd are float32. gamma and beta may be null.
void launch_layer_norm(DType t, const void* x, const float* gamma, const float* beta, void* y, float* mean, float* rstd,
                       int64_t rows, int64_t cols, float eps, cudaStream_t s);
// gamma, d_gamma and d_beta may be null.
void launch_layer_norm_backward(DType t, const void* dy, const void* x, const float* gamma, const float* mean, const float* rstd,
                                void* dx, float* d_gamma, float* d_beta, int64_t rows, int64_t cols, cudaStream_t s);

}  // namespace ln
