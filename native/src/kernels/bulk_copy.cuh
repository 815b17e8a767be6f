// Hopper's bulk copies from global to shared memory (the copy engine of TMA, no tensor map: a run of
// contiguous bytes) and the shared-memory barriers that count their bytes in. One thread issues a copy;
// the threads that read its destination wait on the barrier's phase. Device code for sm_90 and later only.
#pragma once

#include <cstdint>

namespace ln::bulk {

__device__ __forceinline__ uint32_t shared_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

#if __CUDA_ARCH__ >= 900
// A barrier that completes a phase when one arrival (the issuing thread's) and its expected bytes are in.
__device__ __forceinline__ void barrier_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(shared_address(bar)) : "memory");
}

// Makes initialized barriers visible to the copy engine (then a block barrier, for the other threads).
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// Copies `bytes` (a multiple of 16; both addresses 16-byte aligned) from `src` to `dst` in shared memory,
// arriving on `bar` with that many bytes expected: the barrier's current phase completes when they land.
__device__ __forceinline__ void load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(shared_address(dst)),
               "l"(src), "r"(bytes), "r"(shared_address(bar))
               : "memory");
}

// Waits until the phase of `bar` with parity `parity` has completed.
__device__ __forceinline__ void wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(shared_address(bar)),
      "r"(parity)
      : "memory");
}
#endif

}  // namespace ln::bulk
