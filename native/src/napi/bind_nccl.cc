// Bindings: NCCL communicators and the collectives sequence and data parallelism need.
#include <cstring>

#include "../device.h"
#include "../lib/nccl.h"
#include "js.h"

namespace ln::js {

namespace {

constexpr napi_type_tag kCommTag = {0x6c6f6e676e65745fULL, 0x6e63636c636f6d6dULL};

struct CommBox {
  nccl::Comm comm = nullptr;
};

// A communicator that JS dropped without destroying is left to the process's end: destroying it here
// could block on ranks that are still running.
void finalize_comm(napi_env, void* data, void*) { delete static_cast<CommBox*>(data); }

CommBox* comm_arg(const Call& c, size_t i) {
  bool ours = false;
  napi_valuetype t;
  check(c.env, napi_typeof(c.env, c.at(i), &t), "napi_typeof");
  if (t == napi_external) check(c.env, napi_check_object_type_tag(c.env, c.at(i), &kCommTag, &ours), "napi_check_object_type_tag");
  if (!ours) throw TypeError("expected an NCCL communicator handle");
  void* data = nullptr;
  check(c.env, napi_get_value_external(c.env, c.at(i), &data), "napi_get_value_external");
  auto* box = static_cast<CommBox*>(data);
  if (!box->comm) throw Error("NCCL communicator used after it was destroyed");
  return box;
}

int nccl_type(DType t) {
  switch (t) {
    case DType::F32: return nccl::kFloat32;
    case DType::F64: return nccl::kFloat64;
    case DType::I32: return nccl::kInt32;
    case DType::BF16: return nccl::kBfloat16;
  }
  return nccl::kFloat32;
}

int red_op(const std::string& name) {
  if (name == "sum") return nccl::kSum;
  if (name == "max") return nccl::kMax;
  if (name == "min") return nccl::kMin;
  if (name == "avg") return nccl::kAvg;
  throw TypeError("unknown reduction '" + name + "'");
}

napi_value info(const Call& c) {
  std::string reason;
  Object o(c.env);
  if (!nccl::available(reason)) return o.set("ok", boolean(c.env, false)).set("reason", string(c.env, reason)).value;
  int version = 0;
  nccl::check(nccl::api().GetVersion(&version), "ncclGetVersion");
  return o.set("ok", boolean(c.env, true)).set("version", number(c.env, version)).value;
}

napi_value unique_id(const Call& c) {
  nccl::UniqueId id{};
  nccl::check(nccl::api().GetUniqueId(&id), "ncclGetUniqueId");
  void* data = nullptr;
  napi_value ab, arr;
  check(c.env, napi_create_arraybuffer(c.env, sizeof id, &data, &ab), "napi_create_arraybuffer");
  std::memcpy(data, &id, sizeof id);
  check(c.env, napi_create_typedarray(c.env, napi_uint8_array, sizeof id, ab, 0, &arr), "napi_create_typedarray");
  return arr;
}

napi_value comm_init(const Call& c) {
  bool is_typed = false;
  check(c.env, napi_is_typedarray(c.env, c.at(0), &is_typed), "napi_is_typedarray");
  if (!is_typed) throw TypeError("NCCL unique id must be a Uint8Array");
  napi_typedarray_type type;
  size_t len = 0;
  void* data = nullptr;
  napi_value ab;
  size_t off = 0;
  check(c.env, napi_get_typedarray_info(c.env, c.at(0), &type, &len, &data, &ab, &off), "napi_get_typedarray_info");
  nccl::UniqueId id{};
  if (type != napi_uint8_array || len != sizeof id) throw RangeError("NCCL unique id must be 128 bytes");
  std::memcpy(&id, data, sizeof id);
  const int nranks = static_cast<int>(c.integer(1, "nranks")), rank = static_cast<int>(c.integer(2, "rank"));
  if (nranks < 1 || rank < 0 || rank >= nranks) throw RangeError("NCCL: rank " + std::to_string(rank) + " of " + std::to_string(nranks));
  stream();  // the device must be initialized first
  auto* box = new CommBox();
  const nccl::Result r = nccl::api().CommInitRank(&box->comm, nranks, id, rank);
  if (r != nccl::kSuccess) {
    delete box;
    nccl::check(r, "ncclCommInitRank");
  }
  napi_value v;
  check(c.env, napi_create_external(c.env, box, finalize_comm, nullptr, &v), "napi_create_external");
  check(c.env, napi_type_tag_object(c.env, v, &kCommTag), "napi_type_tag_object");
  return v;
}

napi_value comm_destroy(const Call& c) {
  CommBox* box = comm_arg(c, 0);
  const bool abort = !c.is_nullish(1) && c.boolean(1, "abort");
  const nccl::Result r = abort ? nccl::api().CommAbort(box->comm) : nccl::api().CommDestroy(box->comm);
  box->comm = nullptr;
  nccl::check(r, abort ? "ncclCommAbort" : "ncclCommDestroy");
  return undefined(c.env);
}

napi_value async_error(const Call& c) {
  CommBox* box = comm_arg(c, 0);
  nccl::Result state = nccl::kSuccess;
  nccl::check(nccl::api().CommGetAsyncError(box->comm, &state), "ncclCommGetAsyncError");
  if (state == nccl::kSuccess || state == nccl::kInProgress) return string(c.env, "");
  return string(c.env, nccl::api().GetErrorString(state));
}

napi_value all_reduce(const Call& c) {
  CommBox* box = comm_arg(c, 0);
  Buffer* send = c.buffer(1, "send");
  Buffer* recv = c.buffer(2, "recv");
  const int op = red_op(c.string(3, "op"));
  expect(recv, send->dtype, send->size, "allReduce recv");
  nccl::check(nccl::api().AllReduce(send->ptr, recv->ptr, size_t(send->size), nccl_type(send->dtype), op, box->comm, stream()),
              "ncclAllReduce");
  return undefined(c.env);
}

napi_value all_gather(const Call& c) {
  CommBox* box = comm_arg(c, 0);
  Buffer* send = c.buffer(1, "send");
  Buffer* recv = c.buffer(2, "recv");
  if (recv->dtype != send->dtype || send->size == 0 || recv->size % send->size) throw RangeError("allGather: recv must hold nranks sends");
  nccl::check(nccl::api().AllGather(send->ptr, recv->ptr, size_t(send->size), nccl_type(send->dtype), box->comm, stream()),
              "ncclAllGather");
  return undefined(c.env);
}

napi_value reduce_scatter(const Call& c) {
  CommBox* box = comm_arg(c, 0);
  Buffer* send = c.buffer(1, "send");
  Buffer* recv = c.buffer(2, "recv");
  const int op = red_op(c.string(3, "op"));
  if (recv->dtype != send->dtype || recv->size == 0 || send->size % recv->size) throw RangeError("reduceScatter: send must hold nranks recvs");
  nccl::check(nccl::api().ReduceScatter(send->ptr, recv->ptr, size_t(recv->size), nccl_type(send->dtype), op, box->comm, stream()),
              "ncclReduceScatter");
  return undefined(c.env);
}

napi_value broadcast(const Call& c) {
  CommBox* box = comm_arg(c, 0);
  Buffer* send = c.buffer(1, "send");
  Buffer* recv = c.buffer(2, "recv");
  const int root = static_cast<int>(c.integer(3, "root"));
  expect(recv, send->dtype, send->size, "broadcast recv");
  nccl::check(nccl::api().Broadcast(send->ptr, recv->ptr, size_t(send->size), nccl_type(send->dtype), root, box->comm, stream()),
              "ncclBroadcast");
  return undefined(c.env);
}

// (comm, buffer, offset, count, peer): elements [offset, offset + count) of the buffer
void p2p_args(const Call& c, const char* what, CommBox*& box, Buffer*& b, size_t& offset, size_t& count, int& peer) {
  box = comm_arg(c, 0);
  b = c.buffer(1, "buffer");
  const int64_t off = c.integer(2, "offset"), n = c.integer(3, "count");
  peer = static_cast<int>(c.integer(4, "peer"));
  if (off < 0 || n < 0 || off + n > b->size) throw RangeError(std::string(what) + ": elements outside the buffer");
  offset = size_t(off) * dtype_size(b->dtype);
  count = size_t(n);
}

napi_value send(const Call& c) {
  CommBox* box;
  Buffer* b;
  size_t offset, count;
  int peer;
  p2p_args(c, "ncclSend", box, b, offset, count, peer);
  nccl::check(nccl::api().Send(static_cast<const char*>(b->ptr) + offset, count, nccl_type(b->dtype), peer, box->comm, stream()),
              "ncclSend");
  return undefined(c.env);
}

napi_value recv(const Call& c) {
  CommBox* box;
  Buffer* b;
  size_t offset, count;
  int peer;
  p2p_args(c, "ncclRecv", box, b, offset, count, peer);
  nccl::check(nccl::api().Recv(static_cast<char*>(b->ptr) + offset, count, nccl_type(b->dtype), peer, box->comm, stream()), "ncclRecv");
  return undefined(c.env);
}

napi_value group_start(const Call& c) {
  nccl::check(nccl::api().GroupStart(), "ncclGroupStart");
  return undefined(c.env);
}

napi_value group_end(const Call& c) {
  nccl::check(nccl::api().GroupEnd(), "ncclGroupEnd");
  return undefined(c.env);
}

const Register reg({
    {"ncclInfo", entry<info>},
    {"ncclUniqueId", entry<unique_id>},
    {"ncclCommInit", entry<comm_init>},
    {"ncclCommDestroy", entry<comm_destroy>},
    {"ncclAsyncError", entry<async_error>},
    {"ncclAllReduce", entry<all_reduce>},
    {"ncclAllGather", entry<all_gather>},
    {"ncclReduceScatter", entry<reduce_scatter>},
    {"ncclBroadcast", entry<broadcast>},
    {"ncclSend", entry<send>},
    {"ncclRecv", entry<recv>},
    {"ncclGroupStart", entry<group_start>},
    {"ncclGroupEnd", entry<group_end>},
});

}  // namespace

}  // namespace ln::js
