// Layer norm over the rows of [rows, cols]. Semantics follow src/backend/cpu/nn.ts.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common.h"

namespace ln {

// x, y, dy, dx and addend are float32 or bfloat16 storage `t` (float arithmetic); gamma, beta, d_gamma,
// d_beta, mean and rstd are float32. gamma and beta may be null. With gelu_input the rows normalized are
// gelu(x) (the tanh form, math.cuh), computed in float and never stored: the forward and the backward both
// take the pre-activation x, and the backward's dx is the gradient of x.
void launch_layer_norm(DType t, const void* x, const float* gamma, const float* beta, void* y, float* mean, float* rstd,
                       int64_t rows, int64_t cols, float eps, bool gelu_input, cudaStream_t s);
// gamma, addend, d_gamma, d_beta, dx_sums and row_dots may be null; a non-null addend (of dx's shape) is
// added to dx. dx_sums ([cols], float32): dx's column sums, of the values as stored (the bias gradient of a
// layer that made x). row_dots ([rows * cols / segment], float32; segment divides cols): per row and per run
// of `segment` columns, the dot product of dx as stored with x (Dsum = rowsum(dO * O) of an attention whose
// output x is). Both come from the backward's own kernel where the rows fit its registers.
void launch_layer_norm_backward(DType t, const void* dy, const void* x, const float* gamma, const float* mean, const float* rstd,
                                const void* addend, void* dx, float* d_gamma, float* d_beta, float* dx_sums, float* row_dots,
                                int64_t segment, int64_t rows, int64_t cols, bool gelu_input, cudaStream_t s);

}  // namespace ln
