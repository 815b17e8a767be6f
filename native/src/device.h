// The one device this process drives, and the stream all its work is queued on.
#pragma once

#include <string>

#include "common.h"

namespace ln {

struct DeviceInfo {
  int index = -1;
  std::string name;
  int major = 0, minor = 0;
  int sm_count = 0;
  size_t total_memory = 0;
  size_t max_smem_optin = 0;  // shared memory a block may use after opting in
};

// Whether a CUDA device can be used at all; on failure `reason` says why in one line.
bool probe_cuda(std::string& reason, int& device_count);

// Selects the device and creates the stream; later calls with the same index are no-ops.
void init_device(int index);
bool device_ready();
const DeviceInfo& device_info();
cudaStream_t stream();
void synchronize();

// A device word kernels use to report the first bad row or index (atomicMin), read back with a sync.
int* error_flag_device();
void reset_error_flag();
// Waits for the stream and returns the flag (kNoError when nothing was reported).
int read_error_flag();
constexpr int kNoError = 0x7f7f7f7f;  // what reset_error_flag's byte fill leaves

// A device word that queued finiteness checks lower to their id (atomicMin) when their storage holds a NaN
// or an infinity; nothing waits for them until take_finite_check_flag, which waits for the stream, returns
// the smallest failing id (kNoError when none failed) and resets the word.
int* finite_check_flag_device();
int take_finite_check_flag();

// Raises the dynamic shared-memory limit of a kernel when it asks for more than 48 KB.
void allow_dynamic_smem(const void* kernel, size_t bytes, const char* name);

}  // namespace ln
