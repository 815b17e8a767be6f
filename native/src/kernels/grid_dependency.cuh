// Programmatic dependent launch (sm_90): a kernel launched by launch_overlapping(true, ...) may start while
// the previous kernel of its stream still runs its last blocks, once every block of that kernel has called
// allow_next_grid() (or ended). Before it reads or writes what that kernel writes, and before it ends, it
// calls wait_for_previous_grid(), which returns when that kernel has completed and its writes are visible.
// Both instructions do nothing in a kernel launched the ordinary way, and on older GPUs.
#pragma once

#include <utility>

#include <cuda_runtime.h>

#include "../common.h"

namespace ln {

__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// kernel<<<blocks, threads, smem, s>>>(args...), allowed to overlap the previous kernel's last blocks when
// `overlap` (the kernel must then wait as above).
template <typename... Params, typename... Args>
void launch_overlapping(bool overlap, void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t smem, cudaStream_t s,
                        Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = s;
  config.attrs = &attribute;
  config.numAttrs = overlap ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx");
}

}  // namespace ln
