#include "nccl.h"

#include <mutex>

#include "../common.h"
#include "dynload.h"

namespace ln::nccl {

namespace {

struct Loaded {
  bool tried = false;
  bool ok = false;
  std::string reason;
  Api table{};
};

Loaded& state() {
  static std::mutex mu;
  static Loaded s;
  std::lock_guard<std::mutex> lock(mu);
  if (s.tried) return s;
  s.tried = true;
  Library lib = open_library("LONGNET_NCCL_PATH", {"libnccl.so.2", "libnccl.so", "/usr/lib/x86_64-linux-gnu/libnccl.so.2"});
  if (!lib.handle) {
    s.reason = "NCCL could not be loaded (" + lib.error + "); set LONGNET_NCCL_PATH to libnccl.so";
    return s;
  }
  try {
    Api& a = s.table;
    bind_symbol(lib, a.GetVersion, "ncclGetVersion");
    bind_symbol(lib, a.GetUniqueId, "ncclGetUniqueId");
    bind_symbol(lib, a.CommInitRank, "ncclCommInitRank");
    bind_symbol(lib, a.CommDestroy, "ncclCommDestroy");
    bind_symbol(lib, a.CommAbort, "ncclCommAbort");
    bind_symbol(lib, a.CommGetAsyncError, "ncclCommGetAsyncError");
    bind_symbol(lib, a.GetErrorString, "ncclGetErrorString");
    bind_symbol(lib, a.GetLastError, "ncclGetLastError", false);
    bind_symbol(lib, a.AllReduce, "ncclAllReduce");
    bind_symbol(lib, a.AllGather, "ncclAllGather");
    bind_symbol(lib, a.ReduceScatter, "ncclReduceScatter");
    bind_symbol(lib, a.Broadcast, "ncclBroadcast");
    bind_symbol(lib, a.Send, "ncclSend");
    bind_symbol(lib, a.Recv, "ncclRecv");
    bind_symbol(lib, a.GroupStart, "ncclGroupStart");
    bind_symbol(lib, a.GroupEnd, "ncclGroupEnd");
    s.ok = true;
  } catch (const std::exception& e) {
    s.reason = e.what();
  }
  return s;
}

}  // namespace

bool available(std::string& reason) {
  Loaded& s = state();
  reason = s.reason;
  return s.ok;
}

const Api& api() {
  Loaded& s = state();
  if (!s.ok) fail(s.reason);
  return s.table;
}

void check(Result r, const char* what) {
  if (r == kSuccess) return;
  const char* text = state().ok ? state().table.GetErrorString(r) : nullptr;
  throw Error(std::string(what) + " failed: " + (text ? text : "ncclResult " + std::to_string(r)), "ERR_NCCL");
}

}  // namespace ln::nccl
