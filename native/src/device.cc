#include "device.h"

#include <cstring>
#include <mutex>
#include <unordered_map>

namespace ln {

namespace {
DeviceInfo g_info;
cudaStream_t g_stream = nullptr;
int* g_flag_dev = nullptr;
int* g_flag_host = nullptr;  // pinned, so that the read back is a plain async copy
int* g_check_dev = nullptr;   // the smallest id of a failed queued check (see take_queued_check)
unsigned long long* g_slots_dev = nullptr;  // the queued index checks' first bad position and value, by id
unsigned long long* g_slot_host = nullptr;  // pinned
bool g_ready = false;
}  // namespace

bool probe_cuda(std::string& reason, int& device_count) {
  device_count = 0;
  int driver = 0;
  cudaError_t e = cudaDriverGetVersion(&driver);
  if (e != cudaSuccess || driver == 0) {
    cudaGetLastError();
    reason = "no NVIDIA driver found";
    return false;
  }
  e = cudaGetDeviceCount(&device_count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    reason = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    if (e == cudaErrorNoDevice) reason = "no CUDA GPU found";
    if (e == cudaErrorInsufficientDriver) {
      int runtime = 0;
      cudaRuntimeGetVersion(&runtime);
      reason = "the NVIDIA driver supports CUDA " + std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10) +
               " but the addon needs " + std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10);
    }
    device_count = 0;
    return false;
  }
  if (device_count == 0) {
    reason = "no CUDA GPU found";
    return false;
  }
  return true;
}

void init_device(int index) {
  if (g_ready) {
    if (index != g_info.index) fail("cuda backend already runs on device " + std::to_string(g_info.index) +
                                    "; one process drives one GPU");
    return;
  }
  int count = 0;
  check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (index < 0 || index >= count) {
    throw RangeError("CUDA device " + std::to_string(index) + " does not exist (" + std::to_string(count) + " visible)");
  }
  check_cuda(cudaSetDevice(index), "cudaSetDevice");
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
  g_info.index = index;
  g_info.name = prop.name;
  g_info.major = prop.major;
  g_info.minor = prop.minor;
  g_info.sm_count = prop.multiProcessorCount;
  g_info.total_memory = prop.totalGlobalMem;
  int optin = 0;
  check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, index), "cudaDeviceGetAttribute");
  g_info.max_smem_optin = static_cast<size_t>(optin);
  check_cuda(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check_cuda(cudaMalloc(reinterpret_cast<void**>(&g_flag_dev), sizeof(int)), "cudaMalloc");
  check_cuda(cudaMallocHost(reinterpret_cast<void**>(&g_flag_host), sizeof(int)), "cudaMallocHost");
  check_cuda(cudaMalloc(reinterpret_cast<void**>(&g_check_dev), sizeof(int)), "cudaMalloc");
  check_cuda(cudaMemsetAsync(g_check_dev, 0x7f, sizeof(int), g_stream), "cudaMemsetAsync");
  check_cuda(cudaMalloc(reinterpret_cast<void**>(&g_slots_dev), kMaxQueuedChecks * sizeof(unsigned long long)), "cudaMalloc");
  check_cuda(cudaMallocHost(reinterpret_cast<void**>(&g_slot_host), sizeof(unsigned long long)), "cudaMallocHost");
  check_cuda(cudaMemsetAsync(g_slots_dev, 0xff, kMaxQueuedChecks * sizeof(unsigned long long), g_stream), "cudaMemsetAsync");
  g_ready = true;
}

bool device_ready() { return g_ready; }

const DeviceInfo& device_info() {
  if (!g_ready) fail("cuda backend used before init");
  return g_info;
}

cudaStream_t stream() {
  if (!g_ready) fail("cuda backend used before init");
  return g_stream;
}

void synchronize() { check_cuda(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }

int* error_flag_device() { return g_flag_dev; }

void reset_error_flag() {
  // 0x7f in every byte is kNoError
  check_cuda(cudaMemsetAsync(g_flag_dev, 0x7f, sizeof(int), stream()), "cudaMemsetAsync");
}

int read_error_flag() {
  check_cuda(cudaMemcpyAsync(g_flag_host, g_flag_dev, sizeof(int), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync");
  synchronize();
  return *g_flag_host;
}

QueuedCheck queued_check(int64_t id, const char* what) {
  if (id < 0 || id >= kMaxQueuedChecks) {
    throw RangeError(std::string(what) + ": check id " + std::to_string(id) + " is outside [0, " + std::to_string(kMaxQueuedChecks) + ")");
  }
  stream();  // fails before init
  return {g_check_dev, g_slots_dev, static_cast<int>(id)};
}

namespace {

// the queued read (queue_read): pinned bytes (grown as needed), the checks' word, and the event after them
struct QueuedRead {
  char* host = nullptr;
  size_t capacity = 0;
  int* check_host = nullptr;
  cudaEvent_t done = nullptr;
  std::vector<size_t> sizes;  // of the parts queued, while pending
  bool pending = false;
};
QueuedRead g_read;

// The queued check that failed (id from the checks' word): its slot, read after the stream's work, and
// the table cleared.
QueuedCheckResult failed_check(int id) {
  QueuedCheckResult r{id, -1, 0};
  check_cuda(cudaMemcpyAsync(g_slot_host, g_slots_dev + id, sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream()),
             "cudaMemcpyAsync");
  check_cuda(cudaMemsetAsync(g_slots_dev, 0xff, kMaxQueuedChecks * sizeof(unsigned long long), stream()), "cudaMemsetAsync");
  synchronize();
  const unsigned long long slot = *g_slot_host;
  if (slot != ~0ull) {
    r.position = static_cast<int64_t>(slot >> 32);
    r.value = static_cast<int32_t>(static_cast<uint32_t>(slot & 0xffffffffu));
  }
  return r;
}

}  // namespace

void queue_read(const std::vector<std::pair<const void*, size_t>>& parts) {
  if (g_read.pending) fail("a queued read is already waiting to be taken");
  size_t total = 0;
  for (const auto& p : parts) total += p.second;
  if (total > g_read.capacity) {
    if (g_read.host) check_cuda(cudaFreeHost(g_read.host), "cudaFreeHost");
    g_read.host = nullptr;
    check_cuda(cudaMallocHost(reinterpret_cast<void**>(&g_read.host), total), "cudaMallocHost");
    g_read.capacity = total;
  }
  if (!g_read.check_host) check_cuda(cudaMallocHost(reinterpret_cast<void**>(&g_read.check_host), sizeof(int)), "cudaMallocHost");
  if (!g_read.done) check_cuda(cudaEventCreateWithFlags(&g_read.done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  g_read.sizes.clear();
  size_t at = 0;
  for (const auto& p : parts) {
    if (p.second) check_cuda(cudaMemcpyAsync(g_read.host + at, p.first, p.second, cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync");
    g_read.sizes.push_back(p.second);
    at += p.second;
  }
  check_cuda(cudaMemcpyAsync(g_read.check_host, g_check_dev, sizeof(int), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync");
  check_cuda(cudaMemsetAsync(g_check_dev, 0x7f, sizeof(int), stream()), "cudaMemsetAsync");
  check_cuda(cudaEventRecord(g_read.done, stream()), "cudaEventRecord");
  g_read.pending = true;
}

QueuedCheckResult wait_read(const std::vector<std::pair<void*, size_t>>& outs) {
  if (!g_read.pending) fail("no queued read to take");
  g_read.pending = false;
  check_cuda(cudaEventSynchronize(g_read.done), "cudaEventSynchronize");
  if (outs.size() != g_read.sizes.size()) fail("the outputs of a queued read differ from its parts");
  size_t at = 0;
  for (size_t i = 0; i < outs.size(); i++) {
    if (outs[i].second != g_read.sizes[i]) fail("the outputs of a queued read differ from its parts");
    std::memcpy(outs[i].first, g_read.host + at, outs[i].second);
    at += outs[i].second;
  }
  const int id = *g_read.check_host;
  return id == kNoError ? QueuedCheckResult{kNoError, -1, 0} : failed_check(id);
}

QueuedCheckResult take_queued_check() {
  check_cuda(cudaMemcpyAsync(g_flag_host, g_check_dev, sizeof(int), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync");
  check_cuda(cudaMemsetAsync(g_check_dev, 0x7f, sizeof(int), stream()), "cudaMemsetAsync");
  synchronize();
  const int id = *g_flag_host;
  // a failure: read its slot and clear the table (any later check may have written its own)
  return id == kNoError ? QueuedCheckResult{kNoError, -1, 0} : failed_check(id);
}

void allow_dynamic_smem(const void* kernel, size_t bytes, const char* name) {
  static std::mutex mu;
  static std::unordered_map<const void*, size_t> raised;
  if (bytes <= 48 * 1024) return;
  if (bytes > device_info().max_smem_optin) {
    fail(std::string(name) + " needs " + std::to_string(bytes) + " bytes of shared memory but " + g_info.name + " allows " +
         std::to_string(g_info.max_smem_optin));
  }
  std::lock_guard<std::mutex> lock(mu);
  auto it = raised.find(kernel);
  if (it != raised.end() && it->second >= bytes) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
             "cudaFuncSetAttribute");
  raised[kernel] = bytes;
}

}  // namespace ln
