// Normal random numbers generated on the device, for inputs too large to upload (benchmarks, tests).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common.h"

namespace ln {

// x[i] ~ N(0, stddev^2) for i in [0, n), F32 or BF16 (rounded to nearest). Counter-based: element i is a
// function of (seed, i) alone, so the result does not depend on the launch configuration and any prefix
// of a longer fill with the same seed is the shorter fill.
void launch_fill_random_normal(void* x, DType t, int64_t n, uint64_t seed, float stddev, cudaStream_t s);

}  // namespace ln
