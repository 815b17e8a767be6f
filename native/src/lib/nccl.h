// NCCL, loaded at run time. Our own minimal declarations of nccl.h's types (values from the NCCL docs).
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime_api.h>

namespace ln::nccl {

using Result = int;  // ncclResult_t
constexpr Result kSuccess = 0;
constexpr Result kInProgress = 7;

using Comm = struct NcclComm*;

struct UniqueId {
  char internal[128];
};

// ncclDataType_t
enum DataType : int { kInt32 = 2, kFloat32 = 7, kFloat64 = 8, kBfloat16 = 9 };
// ncclRedOp_t
enum RedOp : int { kSum = 0, kProd = 1, kMax = 2, kMin = 3, kAvg = 4 };

struct Api {
  Result (*GetVersion)(int*);
  Result (*GetUniqueId)(UniqueId*);
  Result (*CommInitRank)(Comm*, int nranks, UniqueId id, int rank);
  Result (*CommDestroy)(Comm);
  Result (*CommAbort)(Comm);
  Result (*CommGetAsyncError)(Comm, Result*);
  const char* (*GetErrorString)(Result);
  const char* (*GetLastError)(Comm);  // may be null on old libraries
  Result (*AllReduce)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
  Result (*AllGather)(const void*, void*, size_t, int, Comm, cudaStream_t);
  Result (*ReduceScatter)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
  Result (*Broadcast)(const void*, void*, size_t, int, int root, Comm, cudaStream_t);
  Result (*Send)(const void*, size_t, int, int peer, Comm, cudaStream_t);
  Result (*Recv)(void*, size_t, int, int peer, Comm, cudaStream_t);
  Result (*GroupStart)();
  Result (*GroupEnd)();
};

// Whether NCCL can be loaded; on failure `reason` says why. Never throws.
bool available(std::string& reason);
// The loaded table; throws when NCCL cannot be loaded.
const Api& api();
// Throws "<what> failed: <ncclGetErrorString>" unless r is success.
void check(Result r, const char* what);

}  // namespace ln::nccl
