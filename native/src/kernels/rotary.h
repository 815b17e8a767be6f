// Rotary positions over pairs (Backend.rotatePairs in src/backend/backend.ts): x [outer, positions, inner,
// dim], tables [positions, dim], y[e] = x[e] cos[e] + x[e ^ 1] sin[e] (transpose: sin[e ^ 1]).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace ln {

// x and y are float32, or bfloat16 when `bf16`; the tables are float32.
void launch_rotate_pairs(bool bf16, const void* x, const float* cos, const float* sin, void* y, int64_t outer, int64_t positions,
                         int64_t inner, int64_t dim, bool transpose, cudaStream_t s);

}  // namespace ln
