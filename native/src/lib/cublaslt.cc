#include "cublaslt.h"

#include <mutex>

#include "../common.h"
#include "dynload.h"

namespace ln::lt {

namespace {

Api load() {
  Library lib = open_library("LONGNET_CUBLASLT_PATH", {
      "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so",
      "/usr/local/cuda/lib64/libcublasLt.so.13", "/usr/local/cuda/lib64/libcublasLt.so",
  });
  if (!lib.handle) fail("cuBLASLt could not be loaded (" + lib.error + "); set LONGNET_CUBLASLT_PATH to libcublasLt.so");
  Api a{};
  bind_symbol(lib, a.Create, "cublasLtCreate");
  bind_symbol(lib, a.Destroy, "cublasLtDestroy");
  bind_symbol(lib, a.GetVersion, "cublasLtGetVersion");
  bind_symbol(lib, a.GetStatusName, "cublasLtGetStatusName", false);
  bind_symbol(lib, a.MatmulDescCreate, "cublasLtMatmulDescCreate");
  bind_symbol(lib, a.MatmulDescDestroy, "cublasLtMatmulDescDestroy");
  bind_symbol(lib, a.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
  bind_symbol(lib, a.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
  bind_symbol(lib, a.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
  bind_symbol(lib, a.MatrixLayoutSetAttribute, "cublasLtMatrixLayoutSetAttribute");
  bind_symbol(lib, a.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
  bind_symbol(lib, a.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
  bind_symbol(lib, a.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
  bind_symbol(lib, a.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
  bind_symbol(lib, a.Matmul, "cublasLtMatmul");
  return a;
}

}  // namespace

const Api& api() {
  // a failed load is retried on the next call and reported again
  static std::mutex mu;
  static Api table{};
  static bool loaded = false;
  std::lock_guard<std::mutex> lock(mu);
  if (!loaded) {
    table = load();
    loaded = true;
  }
  return table;
}

std::string status_name(Status s) {
  switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_" + std::to_string(s);
  }
}

void check(Status s, const char* what) {
  if (s == kSuccess) return;
  throw Error(std::string(what) + " failed: " + status_name(s));
}

}  // namespace ln::lt
