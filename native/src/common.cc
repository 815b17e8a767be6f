#include "common.h"

namespace ln {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::BF16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::BF16: return "bfloat16";
  }
  return "unknown";
}

DType dtype_from_int(int64_t code) {
  if (code < 0 || code > 3) fail("unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

void fail(const std::string& message) { throw Error(message); }

void check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  // clear a non-sticky error so that the process can carry on
  cudaGetLastError();
  throw Error(std::string(what) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

void check_launch(const char* kernel) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return;
  throw Error(std::string("launch of ") + kernel + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace ln
