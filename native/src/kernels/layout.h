// Layout kernels: permute, slice and its adjoint (add a block into a larger tensor).
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace ln {

// Any element type of `elem_size` bytes (2, 4 or 8).
void launch_permute(const void* x, void* out, size_t elem_size, const std::vector<int64_t>& shape,
                    const std::vector<int64_t>& perm, cudaStream_t s);
void launch_slice(const void* x, void* out, size_t elem_size, const std::vector<int64_t>& shape,
                  const std::vector<int64_t>& begin, const std::vector<int64_t>& size, cudaStream_t s);
// dst[begin + i] += src[i] over src's shape (float32).
void launch_add_slice_into(float* dst, const std::vector<int64_t>& dst_shape, const float* src,
                           const std::vector<int64_t>& src_shape, const std::vector<int64_t>& begin, cudaStream_t s);

}  // namespace ln
