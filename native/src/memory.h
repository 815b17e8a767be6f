// Device memory: a caching allocator and the buffers JS holds.
//
// All work runs on one stream, so a block freed by JS can be handed to the next allocation at once:
// any kernel that still reads it was queued earlier on the same stream and runs first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace ln {

struct MemoryStats {
  size_t in_use = 0;       // bytes of blocks held by live buffers (rounded sizes)
  size_t cached = 0;       // bytes of free blocks kept for reuse
  size_t peak_in_use = 0;
  size_t device_allocs = 0;  // cudaMalloc calls so far
  size_t cache_hits = 0;
};

class Allocator {
 public:
  // A block of at least `bytes`; `capacity` receives its rounded size. Throws a clear error on OOM.
  void* allocate(size_t bytes, size_t& capacity);
  void release(void* ptr, size_t capacity);
  // Returns every cached block to the driver.
  void empty_cache();
  MemoryStats stats() const { return stats_; }
  // Starts a new peak measurement: peak_in_use becomes the bytes in use now.
  void reset_peak() { stats_.peak_in_use = stats_.in_use; }

  static size_t round_size(size_t bytes);

 private:
  std::unordered_map<size_t, std::vector<void*>> free_;
  MemoryStats stats_;
};

Allocator& allocator();

// Device memory for the kernels of one launch sequence (partial results, tables), back to the cache when
// it goes out of scope, normal exit or exception: as soon as the kernels that use it are queued, since one
// stream orders the work.
class Scratch {
 public:
  explicit Scratch(size_t bytes) : ptr_(allocator().allocate(bytes, capacity_)) {}
  ~Scratch() { allocator().release(ptr_, capacity_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  size_t capacity_ = 0;  // set by allocate(), before ptr_ (declaration order)
  void* ptr_;
};

// What a JS storage handle points to. `ptr` is null once freed (or for zero elements).
struct Buffer {
  void* ptr = nullptr;
  size_t capacity = 0;
  int64_t size = 0;  // elements
  DType dtype = DType::F32;
  bool freed = false;

  size_t bytes() const { return static_cast<size_t>(size) * dtype_size(dtype); }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr); }
};

Buffer* new_buffer(DType dtype, int64_t size);
// Returns the memory to the cache; the Buffer object itself lives until JS drops its handle.
void free_buffer(Buffer* b);

}  // namespace ln
