#include "device.h"

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

QueuedCheckResult take_queued_check() {
  check_cuda(cudaMemcpyAsync(g_flag_host, g_check_dev, sizeof(int), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync");
  check_cuda(cudaMemsetAsync(g_check_dev, 0x7f, sizeof(int), stream()), "cudaMemsetAsync");
  synchronize();
  QueuedCheckResult r{*g_flag_host, -1, 0};
  if (r.id == kNoError) return r;
  // a failure: read its slot and clear the table (any later check may have written its own)
  check_cuda(cudaMemcpyAsync(g_slot_host, g_slots_dev + r.id, sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream()),
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
