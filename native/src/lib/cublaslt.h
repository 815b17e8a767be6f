// cuBLASLt, loaded at run time. The declarations below are our own minimal subset of cublasLt.h (the
// machines that build the addon may have no cuBLAS headers); values follow the cuBLASLt documentation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>
#include <library_types.h>

namespace ln::lt {

using Status = int;  // cublasStatus_t
constexpr Status kSuccess = 0;

using Handle = struct LtContext*;
using MatmulDesc = struct LtMatmulDesc*;
using MatrixLayout = struct LtMatrixLayout*;
using Preference = struct LtPreference*;

struct MatmulAlgo {
  uint64_t data[8];
};

struct HeuristicResult {
  MatmulAlgo algo;
  size_t workspace_size;
  Status state;
  float waves_count;
  int reserved[4];
};

// cublasComputeType_t
enum ComputeType : int {
  kCompute32F = 68,
  kCompute32FFast16BF = 75,
  kCompute32FFastTF32 = 77,
  kCompute64F = 70,
};

// cublasOperation_t
enum Operation : int { kOpN = 0, kOpT = 1 };

// cublasLtMatmulDescAttributes_t
enum DescAttribute : int {
  kDescTransA = 3,
  kDescTransB = 4,
  kDescEpilogue = 7,
  kDescBiasPointer = 8,
  kDescEpilogueAuxPointer = 11,
  kDescEpilogueAuxLd = 12,
};

// cublasLtEpilogue_t
enum Epilogue : uint32_t {
  kEpilogueDefault = 1,
  kEpilogueBias = 4,
  kEpilogueGeluAuxBias = 164,  // D = gelu(AB + bias) (tanh form), aux = AB + bias
};

// cublasLtMatrixLayoutAttribute_t
enum LayoutAttribute : int { kLayoutBatchCount = 5, kLayoutStridedBatchOffset = 6 };

// cublasLtMatmulPreferenceAttributes_t
enum PreferenceAttribute : int { kPrefMaxWorkspaceBytes = 1, kPrefMinAlignmentABytes = 5 };  // then B, C, D: 6, 7, 8

struct Api {
  Status (*Create)(Handle*);
  Status (*Destroy)(Handle);
  size_t (*GetVersion)();
  const char* (*GetStatusName)(Status);  // may be null on old libraries
  Status (*MatmulDescCreate)(MatmulDesc*, int /*ComputeType*/, cudaDataType_t /*scale*/);
  Status (*MatmulDescDestroy)(MatmulDesc);
  Status (*MatmulDescSetAttribute)(MatmulDesc, int, const void*, size_t);
  Status (*MatrixLayoutCreate)(MatrixLayout*, cudaDataType_t, uint64_t rows, uint64_t cols, int64_t ld);
  Status (*MatrixLayoutDestroy)(MatrixLayout);
  Status (*MatrixLayoutSetAttribute)(MatrixLayout, int, const void*, size_t);
  Status (*MatmulPreferenceCreate)(Preference*);
  Status (*MatmulPreferenceDestroy)(Preference);
  Status (*MatmulPreferenceSetAttribute)(Preference, int, const void*, size_t);
  Status (*MatmulAlgoGetHeuristic)(Handle, MatmulDesc, MatrixLayout, MatrixLayout, MatrixLayout, MatrixLayout, Preference,
                                   int requested, HeuristicResult* results, int* returned);
  Status (*Matmul)(Handle, MatmulDesc, const void* alpha, const void* A, MatrixLayout, const void* B, MatrixLayout,
                   const void* beta, const void* C, MatrixLayout, void* D, MatrixLayout, const MatmulAlgo* algo,
                   void* workspace, size_t workspace_bytes, cudaStream_t stream);
};

// The loaded table; throws naming the library and the reason when it cannot be loaded.
const Api& api();
// Throws "<what> failed: CUBLAS_STATUS_..." unless s is success.
void check(Status s, const char* what);
std::string status_name(Status s);

}  // namespace ln::lt
