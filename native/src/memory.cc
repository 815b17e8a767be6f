#include "memory.h"

#include "device.h"

namespace ln {

Allocator& allocator() {
  static Allocator a;
  return a;
}

size_t Allocator::round_size(size_t bytes) {
  // small blocks in 512-byte steps; larger ones in steps of 1/8 of their power of two (at most 12.5% waste)
  constexpr size_t kSmall = 1 << 20;
  if (bytes <= kSmall) return (bytes + 511) / 512 * 512;
  size_t p = 1;
  while (p * 2 <= bytes) p *= 2;
  size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

static std::string format_bytes(size_t b) {
  char buf[64];
  if (b >= (size_t(1) << 30)) snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(size_t(1) << 30));
  else if (b >= (size_t(1) << 20)) snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(size_t(1) << 20));
  else snprintf(buf, sizeof buf, "%zu bytes", b);
  return buf;
}

void* Allocator::allocate(size_t bytes, size_t& capacity) {
  capacity = round_size(bytes);
  auto it = free_.find(capacity);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    stats_.cached -= capacity;
    stats_.in_use += capacity;
    stats_.cache_hits++;
    if (stats_.in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.in_use;
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, capacity);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    // blocks of other sizes may be enough once given back
    empty_cache();
    e = cudaMalloc(&p, capacity);
  }
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    throw Error("CUDA out of memory: requested " + std::to_string(bytes) + " bytes (" + format_bytes(capacity) +
                    " rounded) with " + format_bytes(free_b) + " free of " + format_bytes(total_b) + " on device " +
                    std::to_string(device_info().index) + "; longnet holds " + format_bytes(stats_.in_use) + " in tensors",
                "ERR_CUDA_OUT_OF_MEMORY");
  }
  check_cuda(e, "cudaMalloc");
  stats_.device_allocs++;
  stats_.in_use += capacity;
  if (stats_.in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.in_use;
  return p;
}

void Allocator::release(void* ptr, size_t capacity) {
  if (!ptr) return;
  free_[capacity].push_back(ptr);
  stats_.in_use -= capacity;
  stats_.cached += capacity;
}

void Allocator::empty_cache() {
  if (stats_.cached == 0) return;
  // cudaFree waits for the device; queued kernels may still use blocks that were freed from JS
  check_cuda(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
  for (auto& [cap, list] : free_) {
    for (void* p : list) check_cuda(cudaFree(p), "cudaFree");
    list.clear();
  }
  free_.clear();
  stats_.cached = 0;
}

Buffer* new_buffer(DType dtype, int64_t size) {
  if (size < 0) throw RangeError("negative storage size " + std::to_string(size));
  auto* b = new Buffer();
  b->dtype = dtype;
  b->size = size;
  if (size > 0) {
    try {
      b->ptr = allocator().allocate(b->bytes(), b->capacity);
    } catch (...) {
      delete b;
      throw;
    }
  }
  return b;
}

void free_buffer(Buffer* b) {
  if (b->freed) return;
  allocator().release(b->ptr, b->capacity);
  b->ptr = nullptr;
  b->freed = true;
}

}  // namespace ln
