// Sums of squares of many tensors at once (the global gradient norm), in two launches whatever their
// number, and deterministic: fixed partials in float64, reduced in a fixed order.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace ln {

// out[i] = sum of xs[i][j]^2 over j < sizes[i] (float32 out, float64 accumulation).
void launch_sums_of_squares(const std::vector<const float*>& xs, const std::vector<int64_t>& sizes, float* out, cudaStream_t s);

}  // namespace ln
