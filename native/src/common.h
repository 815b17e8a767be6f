// Shared definitions of the addon: errors, element types, limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

namespace ln {

// Any failure inside the addon; the Node-API glue turns it into a JS exception with `code`.
struct Error : std::runtime_error {
  std::string code;
  explicit Error(const std::string& message, std::string code_ = "ERR_LONGNET_CUDA")
      : std::runtime_error(message), code(std::move(code_)) {}
};

// Bad arguments from JS (wrong shapes, out-of-range indices): a RangeError on the JS side.
struct RangeError : Error {
  explicit RangeError(const std::string& message) : Error(message, "ERR_LONGNET_RANGE") {}
};

// An argument of the wrong kind from JS: a TypeError on the JS side.
struct TypeError : Error {
  explicit TypeError(const std::string& message) : Error(message, "ERR_INVALID_ARG_TYPE") {}
};

// Element types of device storage. The numbers are part of the JS interface (src/backend/cuda/native.ts).
enum class DType : int { F32 = 0, F64 = 1, I32 = 2, BF16 = 3 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType dtype_from_int(int64_t code);

// The most dimensions a strided kernel takes after merging contiguous ones.
constexpr int kMaxDims = 8;

[[noreturn]] void fail(const std::string& message);
// Throws "<what> failed: cudaErrorX (description)" unless e is cudaSuccess.
void check_cuda(cudaError_t e, const char* what);
// After a kernel launch: reports a bad launch configuration by the kernel's name.
void check_launch(const char* kernel);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace ln
