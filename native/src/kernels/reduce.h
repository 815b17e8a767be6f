// Sum and max over any set of axes (float32 or bfloat16 in, float32 out; sums accumulate in float64).
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "../common.h"

namespace ln {

enum class ReduceOp : int { Sum, Max };

// out has the input's shape with the reduced axes of length 1 (the CPU backend's keep-dims layout).
void launch_reduce(ReduceOp op, const float* x, float* out, const std::vector<int64_t>& shape,
                   const std::vector<int64_t>& axes, cudaStream_t s);
// The same over bfloat16 input.
void launch_reduce_bf16(ReduceOp op, const void* x, float* out, const std::vector<int64_t>& shape,
                        const std::vector<int64_t>& axes, cudaStream_t s);
// x of type t (float32 or bfloat16) into out of type out_t (float32, or t): float32 results, rounded once
// to bfloat16 through scratch for a bfloat16 out.
void launch_reduce_into(ReduceOp op, DType t, const void* x, DType out_t, void* out, const std::vector<int64_t>& shape,
                        const std::vector<int64_t>& axes, cudaStream_t s);

}  // namespace ln
