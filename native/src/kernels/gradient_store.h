// The last pass over a float32 gradient that kernels accumulated (the attention's dq, dk and dv): stored in
// its tensor's type, rotated back first where the tensor was rotated, with its column sums in the same pass
// (the bias gradient of the linear layer that made the tensor, which then needs no pass of its own).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common.h"

namespace ln {

// x: float32 [outer, positions, inner, dim]; y: the same of type y_t (float32 or bfloat16). With tables
// (cos and sin [positions, dim], float32; both or neither), y is rotatePairs(x, cos, sin, transposed)
// (rotary.h), else x as y_t. sums ([inner * dim], float32): y's column sums over the outer * positions
// rows, of the values as stored.
void launch_store_gradient(const float* x, const float* cos, const float* sin, void* y, DType y_t, float* sums, int64_t outer,
                           int64_t positions, int64_t inner, int64_t dim, cudaStream_t s);

}  // namespace ln
