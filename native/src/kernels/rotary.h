// Rotary positions over pairs (Backend.rotatePairs in src/backend/backend.ts): x [outer, positions, inner,
// dim], tables [positions, dim], y[e] = x[e] cos[e] + x[e ^ 1] sin[e] (transpose: sin[e ^ 1]).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace ln {

// x and y are each float32, or bfloat16 when x_bf16 / y_bf16 (arithmetic in float32); the tables are float32.
// With a non-null `failed`, a NaN or infinite value written to y lowers it to `check_id` (atomicMin): the
// finiteness check of y, done as y is written.
void launch_rotate_pairs(bool x_bf16, bool y_bf16, const void* x, const float* cos, const float* sin, void* y, int64_t outer,
                         int64_t positions, int64_t inner, int64_t dim, bool transpose, int* failed, int check_id, cudaStream_t s);

}  // namespace ln
