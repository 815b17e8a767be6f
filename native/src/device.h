// The one device this process drives, and the stream all its work is queued on.
#pragma once

#include <string>
#include <utility>
#include <vector>

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

// Queued checks wait for nothing. A failed one lowers a device word to its id (atomicMin): the finiteness
// checks of attention inputs, and the index checks of embeddings and cross-entropy targets, which also keep
// their first bad position and its value in the check's slot of a device table (one 64-bit word: the
// position in the high half, so that atomicMin keeps the first). take_queued_check waits for the stream and
// returns the smallest failing id (kNoError when none failed) with its slot, and resets both.
constexpr int kMaxQueuedChecks = 1 << 16;
// Where a kernel reports the failure of the queued check `id`.
struct QueuedCheck {
  int* failed;
  unsigned long long* slots;
  int id;
};
// Throws a RangeError naming `what` unless 0 <= id < kMaxQueuedChecks.
QueuedCheck queued_check(int64_t id, const char* what);
struct QueuedCheckResult {
  int id;            // kNoError when no check failed
  int64_t position;  // for an index check: its first bad position and the value there
  int32_t value;
};
QueuedCheckResult take_queued_check();

// A read queued now and waited for later: copies of device bytes, and of the queued checks' word, into
// pinned memory behind an event, so that the host can queue more work (an optimizer update) before it
// waits, and then waits only for what was queued before the read. One at a time: queue_read fails while
// one is pending. wait_read copies the bytes out, in the order queued, and returns the checks' result (as
// take_queued_check; on a failure it waits for the stream to read the failed check's slot).
void queue_read(const std::vector<std::pair<const void*, size_t>>& parts);
QueuedCheckResult wait_read(const std::vector<std::pair<void*, size_t>>& outs);

// Raises the dynamic shared-memory limit of a kernel when it asks for more than 48 KB.
void allow_dynamic_smem(const void* kernel, size_t bytes, const char* name);

}  // namespace ln
