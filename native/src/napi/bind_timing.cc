// Bindings: marks on the stream, timed by the device, for profiles that do not wait between calls.
#include <vector>

#include "../common.h"
#include "../device.h"
#include "js.h"

namespace ln::js {

namespace {

// Events recorded since the last read; created once and reused, so a profile allocates only as it grows.
struct Marks {
  std::vector<cudaEvent_t> events;
  size_t used = 0;
};

Marks& marks() {
  static Marks m;
  return m;
}

napi_value stream_mark(const Call& c) {
  Marks& m = marks();
  if (m.used == m.events.size()) {
    cudaEvent_t e;
    check_cuda(cudaEventCreate(&e), "cudaEventCreate");
    m.events.push_back(e);
  }
  check_cuda(cudaEventRecord(m.events[m.used], stream()), "cudaEventRecord");
  return number(c.env, double(m.used++));
}

// Waits for the stream; the milliseconds from the first mark to each mark, in order; forgets them all.
napi_value stream_mark_times(const Call& c) {
  Marks& m = marks();
  synchronize();
  napi_value out;
  check(c.env, napi_create_array_with_length(c.env, m.used, &out), "napi_create_array_with_length");
  for (size_t i = 0; i < m.used; i++) {
    float ms = 0.0f;
    if (i > 0) check_cuda(cudaEventElapsedTime(&ms, m.events[0], m.events[i]), "cudaEventElapsedTime");
    check(c.env, napi_set_element(c.env, out, static_cast<uint32_t>(i), number(c.env, ms)), "napi_set_element");
  }
  m.used = 0;
  return out;
}

const Register reg({
    {"streamMark", entry<stream_mark>},
    {"streamMarkTimes", entry<stream_mark_times>},
});

}  // namespace

}  // namespace ln::js
