// Bindings: device selection, storage (alloc, free, transfers, fill, copy, cast), memory statistics.
#include <cmath>

#include "../device.h"
#include "../gemm.h"
#include "../kernels/elementwise.h"
#include "js.h"

namespace ln::js {

namespace {

napi_value probe(const Call& c) {
  std::string reason;
  int count = 0;
  const bool ok = probe_cuda(reason, count);
  return Object(c.env).set("ok", boolean(c.env, ok)).set("reason", string(c.env, reason)).set("devices", number(c.env, count)).value;
}

napi_value init(const Call& c) {
  init_device(static_cast<int>(c.integer(0, "device")));
  const DeviceInfo& d = device_info();
  return Object(c.env)
      .set("index", number(c.env, d.index))
      .set("name", string(c.env, d.name))
      .set("major", number(c.env, d.major))
      .set("minor", number(c.env, d.minor))
      .set("multiprocessors", number(c.env, d.sm_count))
      .set("totalMemory", number(c.env, double(d.total_memory)))
      .value;
}

napi_value alloc(const Call& c) {
  const DType t = dtype_from_int(c.integer(0, "dtype"));
  const int64_t size = c.integer(1, "size");
  const bool zero = c.boolean(2, "zero");
  Buffer* b = new_buffer(t, size);
  if (zero && b->bytes() > 0) {
    try {
      check_cuda(cudaMemsetAsync(b->ptr, 0, b->bytes(), stream()), "cudaMemsetAsync");
    } catch (...) {
      free_buffer(b);
      delete b;
      throw;
    }
  }
  return wrap_buffer(c.env, b);
}

napi_value free_(const Call& c) {
  free_buffer(unwrap_buffer(c.env, c.at(0), "storage"));
  return undefined(c.env);
}

// The bytes of a typed array.
void* typed_array_bytes(napi_env env, napi_value v, size_t& bytes) {
  bool is_typed = false;
  check(env, napi_is_typedarray(env, v, &is_typed), "napi_is_typedarray");
  if (!is_typed) throw TypeError("expected a typed array");
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  check(env, napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset), "napi_get_typedarray_info");
  size_t elem = 1;
  switch (type) {
    case napi_int16_array: case napi_uint16_array: elem = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
    default: elem = 1;
  }
  bytes = length * elem;
  return data;
}

void* typed_array_bytes(const Call& c, size_t i, size_t& bytes) { return typed_array_bytes(c.env, c.at(i), bytes); }

napi_value upload(const Call& c) {
  Buffer* b = c.buffer(0, "storage");
  size_t bytes = 0;
  void* host = typed_array_bytes(c, 1, bytes);
  if (bytes != b->bytes()) throw RangeError("upload: " + std::to_string(bytes) + " bytes into a storage of " + std::to_string(b->bytes()));
  // from pageable memory the copy returns once the host bytes are staged, so JS may reuse the array
  if (bytes) check_cuda(cudaMemcpyAsync(b->ptr, host, bytes, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (host to device)");
  return undefined(c.env);
}

napi_value download(const Call& c) {
  Buffer* b = c.buffer(0, "storage");
  size_t bytes = 0;
  void* host = typed_array_bytes(c, 1, bytes);
  if (bytes != b->bytes()) throw RangeError("download: a storage of " + std::to_string(b->bytes()) + " bytes into " + std::to_string(bytes));
  if (bytes) check_cuda(cudaMemcpyAsync(host, b->ptr, bytes, cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync (device to host)");
  synchronize();
  return undefined(c.env);
}

napi_value fill(const Call& c) {
  Buffer* b = c.buffer(0, "storage");
  const double value = c.number(1, "value");
  if (value == 0.0 && !std::signbit(value)) {
    if (b->bytes()) check_cuda(cudaMemsetAsync(b->ptr, 0, b->bytes(), stream()), "cudaMemsetAsync");
  } else {
    launch_fill(b->ptr, b->dtype, value, b->size, stream());
  }
  return undefined(c.env);
}

napi_value copy_into(const Call& c) {
  Buffer* dst = c.buffer(0, "dst");
  Buffer* src = c.buffer(1, "src");
  if (dst->bytes() != src->bytes()) throw RangeError("copy: sizes differ (" + std::to_string(dst->size) + " vs " + std::to_string(src->size) + ")");
  if (dst->bytes() && dst->ptr != src->ptr) {
    check_cuda(cudaMemcpyAsync(dst->ptr, src->ptr, dst->bytes(), cudaMemcpyDeviceToDevice, stream()), "cudaMemcpyAsync (device to device)");
  }
  return undefined(c.env);
}

napi_value cast(const Call& c) {
  Buffer* src = c.buffer(0, "src");
  Buffer* dst = c.buffer(1, "dst");
  if (dst->size != src->size) throw RangeError("cast: sizes differ");
  launch_cast(src->ptr, src->dtype, dst->ptr, dst->dtype, src->size, stream());
  return undefined(c.env);
}

napi_value all_finite(const Call& c) {
  Buffer* b = c.buffer(0, "storage");
  if (b->size == 0 || b->dtype == DType::I32) return boolean(c.env, true);
  // the flag starts at kNoError and the kernel writes 0 on a non-finite element
  reset_error_flag();
  launch_all_finite(b->ptr, b->dtype, b->size, error_flag_device(), stream());
  return boolean(c.env, read_error_flag() != 0);
}

napi_value queue_finite_check(const Call& c) {
  Buffer* b = c.buffer(0, "storage");
  const QueuedCheck check = queued_check(c.integer(1, "id"), "queueFiniteCheck");
  launch_flag_non_finite(b->ptr, b->dtype, b->size, check.id, check.failed, stream());
  return undefined(c.env);
}

// null when no queued check failed, else the first failed one's id with, for an index check, the position
// and value it found.
napi_value check_result(const Call& c, const QueuedCheckResult& r) {
  if (r.id == kNoError) {
    napi_value null;
    check(c.env, napi_get_null(c.env, &null), "napi_get_null");
    return null;
  }
  return Object(c.env)
      .set("id", number(c.env, r.id))
      .set("position", number(c.env, double(r.position)))
      .set("value", number(c.env, r.value))
      .value;
}

napi_value take_check(const Call& c) { return check_result(c, take_queued_check()); }

// readLater(storages): their bytes and the queued checks' word copied behind an event (queue_read)
napi_value read_later(const Call& c) {
  const std::vector<Buffer*> bufs = c.buffers(0, "storages");
  std::vector<std::pair<const void*, size_t>> parts;
  for (Buffer* b : bufs) parts.emplace_back(b->ptr, b->bytes());
  queue_read(parts);
  return undefined(c.env);
}

// readWait(outs): waits for the queued read, fills the typed arrays (one a storage, of its bytes) and
// returns the queued checks' result as takeQueuedCheck does
napi_value read_wait(const Call& c) {
  bool is_array = false;
  check(c.env, napi_is_array(c.env, c.at(0), &is_array), "napi_is_array");
  if (!is_array) throw TypeError("outs must be an array of typed arrays");
  uint32_t len = 0;
  check(c.env, napi_get_array_length(c.env, c.at(0), &len), "napi_get_array_length");
  std::vector<std::pair<void*, size_t>> outs(len);
  for (uint32_t j = 0; j < len; j++) {
    napi_value e;
    check(c.env, napi_get_element(c.env, c.at(0), j, &e), "napi_get_element");
    outs[j].first = typed_array_bytes(c.env, e, outs[j].second);
  }
  return check_result(c, wait_read(outs));
}

napi_value sync(const Call& c) {
  synchronize();
  return undefined(c.env);
}

napi_value memory_stats(const Call& c) {
  const MemoryStats s = allocator().stats();
  size_t free_b = 0, total_b = 0;
  check_cuda(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  return Object(c.env)
      .set("inUse", number(c.env, double(s.in_use)))
      .set("cached", number(c.env, double(s.cached)))
      .set("peakInUse", number(c.env, double(s.peak_in_use)))
      .set("deviceAllocations", number(c.env, double(s.device_allocs)))
      .set("cacheHits", number(c.env, double(s.cache_hits)))
      .set("deviceFree", number(c.env, double(free_b)))
      .set("deviceTotal", number(c.env, double(total_b)))
      .value;
}

napi_value empty_cache(const Call& c) {
  allocator().empty_cache();
  return undefined(c.env);
}

napi_value set_precision(const Call& c) {
  const int64_t p = c.integer(0, "precision");
  if (p < 0 || p > 2) throw RangeError("matmul precision code must be 0, 1 or 2");
  set_matmul_precision(static_cast<MatmulPrecision>(p));
  return undefined(c.env);
}

napi_value get_precision(const Call& c) { return number(c.env, int(matmul_precision())); }

napi_value lt_version(const Call& c) { return number(c.env, double(cublaslt_version())); }

const Register reg({
    {"probe", entry<probe>},
    {"init", entry<init>},
    {"alloc", entry<alloc>},
    {"free", entry<free_>},
    {"upload", entry<upload>},
    {"download", entry<download>},
    {"fill", entry<fill>},
    {"copyInto", entry<copy_into>},
    {"cast", entry<cast>},
    {"allFinite", entry<all_finite>},
    {"queueFiniteCheck", entry<queue_finite_check>},
    {"takeQueuedCheck", entry<take_check>},
    {"readLater", entry<read_later>},
    {"readWait", entry<read_wait>},
    {"synchronize", entry<sync>},
    {"memoryStats", entry<memory_stats>},
    {"emptyCache", entry<empty_cache>},
    {"setMatmulPrecision", entry<set_precision>},
    {"matmulPrecision", entry<get_precision>},
    {"cublasLtVersion", entry<lt_version>},
});

}  // namespace

}  // namespace ln::js
