#include "js.h"

#include <cmath>

namespace ln::js {

namespace {

// Marks externals made by this addon, so that a foreign object is never read as a Buffer.
constexpr napi_type_tag kBufferTag = {0x6c6f6e676e65745fULL, 0x6375646162756631ULL};

void finalize_buffer(napi_env, void* data, void*) {
  auto* b = static_cast<Buffer*>(data);
  free_buffer(b);
  delete b;
}

}  // namespace

void check(napi_env env, napi_status status, const char* what) {
  if (status == napi_ok) return;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) throw Error(std::string("node-api: ") + what + " raised");
  throw Error(std::string("node-api: ") + what + " failed (status " + std::to_string(int(status)) + ")");
}

napi_value Call::at(size_t i) const {
  if (i >= argv.size()) throw TypeError("missing argument " + std::to_string(i));
  return argv[i];
}

double Call::number(size_t i, const char* name) const {
  double v = 0;
  if (napi_get_value_double(env, at(i), &v) != napi_ok) throw TypeError(std::string(name) + " must be a number");
  return v;
}

int64_t Call::integer(size_t i, const char* name) const {
  const double v = number(i, name);
  if (!std::isfinite(v) || v != std::floor(v)) throw TypeError(std::string(name) + " must be an integer");
  return static_cast<int64_t>(v);
}

bool Call::boolean(size_t i, const char* name) const {
  bool v = false;
  if (napi_get_value_bool(env, at(i), &v) != napi_ok) throw TypeError(std::string(name) + " must be a boolean");
  return v;
}

std::string Call::string(size_t i, const char* name) const {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, at(i), nullptr, 0, &len) != napi_ok) throw TypeError(std::string(name) + " must be a string");
  std::string s(len, '\0');
  check(env, napi_get_value_string_utf8(env, at(i), s.data(), len + 1, &len), "napi_get_value_string_utf8");
  return s;
}

Dims Call::dims(size_t i, const char* name) const {
  bool is_array = false;
  check(env, napi_is_array(env, at(i), &is_array), "napi_is_array");
  if (!is_array) throw TypeError(std::string(name) + " must be an array of integers");
  uint32_t len = 0;
  check(env, napi_get_array_length(env, at(i), &len), "napi_get_array_length");
  Dims out(len);
  for (uint32_t j = 0; j < len; j++) {
    napi_value e;
    check(env, napi_get_element(env, at(i), j, &e), "napi_get_element");
    double v = 0;
    if (napi_get_value_double(env, e, &v) != napi_ok || !std::isfinite(v) || v != std::floor(v)) {
      throw TypeError(std::string(name) + " must be an array of integers");
    }
    out[j] = static_cast<int64_t>(v);
  }
  return out;
}

std::vector<double> Call::numbers(size_t i, const char* name) const {
  bool is_array = false;
  check(env, napi_is_array(env, at(i), &is_array), "napi_is_array");
  if (!is_array) throw TypeError(std::string(name) + " must be an array of numbers");
  uint32_t len = 0;
  check(env, napi_get_array_length(env, at(i), &len), "napi_get_array_length");
  std::vector<double> out(len);
  for (uint32_t j = 0; j < len; j++) {
    napi_value e;
    check(env, napi_get_element(env, at(i), j, &e), "napi_get_element");
    if (napi_get_value_double(env, e, &out[j]) != napi_ok || !std::isfinite(out[j])) {
      throw TypeError(std::string(name) + " must be an array of finite numbers");
    }
  }
  return out;
}

bool Call::is_nullish(size_t i) const {
  if (i >= argv.size()) return true;
  napi_valuetype t;
  check(env, napi_typeof(env, argv[i], &t), "napi_typeof");
  return t == napi_null || t == napi_undefined;
}

Buffer* unwrap_buffer(napi_env env, napi_value v, const char* name) {
  bool ours = false;
  napi_valuetype t;
  check(env, napi_typeof(env, v, &t), "napi_typeof");
  if (t == napi_external) check(env, napi_check_object_type_tag(env, v, &kBufferTag, &ours), "napi_check_object_type_tag");
  if (!ours) throw TypeError(std::string(name) + " is not a CUDA storage handle");
  void* data = nullptr;
  check(env, napi_get_value_external(env, v, &data), "napi_get_value_external");
  return static_cast<Buffer*>(data);
}

Buffer* Call::buffer(size_t i, const char* name) const {
  Buffer* b = unwrap_buffer(env, at(i), name);
  if (b->freed) throw Error(std::string(name) + ": CUDA storage used after it was freed");
  return b;
}

Buffer* Call::optional_buffer(size_t i, const char* name) const { return is_nullish(i) ? nullptr : buffer(i, name); }

std::vector<Buffer*> Call::buffers(size_t i, const char* name) const {
  bool is_array = false;
  check(env, napi_is_array(env, at(i), &is_array), "napi_is_array");
  if (!is_array) throw TypeError(std::string(name) + " must be an array of CUDA storages");
  uint32_t len = 0;
  check(env, napi_get_array_length(env, at(i), &len), "napi_get_array_length");
  std::vector<Buffer*> out(len);
  for (uint32_t j = 0; j < len; j++) {
    napi_value e;
    check(env, napi_get_element(env, at(i), j, &e), "napi_get_element");
    out[j] = unwrap_buffer(env, e, name);
    if (out[j]->freed) throw Error(std::string(name) + ": CUDA storage used after it was freed");
  }
  return out;
}

napi_value wrap_buffer(napi_env env, Buffer* b) {
  napi_value v;
  napi_status s = napi_create_external(env, b, finalize_buffer, nullptr, &v);
  if (s != napi_ok) {
    free_buffer(b);
    delete b;
    check(env, s, "napi_create_external");
  }
  check(env, napi_type_tag_object(env, v, &kBufferTag), "napi_type_tag_object");
  return v;
}

napi_value undefined(napi_env env) {
  napi_value v;
  check(env, napi_get_undefined(env, &v), "napi_get_undefined");
  return v;
}

napi_value number(napi_env env, double d) {
  napi_value v;
  check(env, napi_create_double(env, d, &v), "napi_create_double");
  return v;
}

napi_value boolean(napi_env env, bool b) {
  napi_value v;
  check(env, napi_get_boolean(env, b, &v), "napi_get_boolean");
  return v;
}

napi_value string(napi_env env, const std::string& s) {
  napi_value v;
  check(env, napi_create_string_utf8(env, s.data(), s.size(), &v), "napi_create_string_utf8");
  return v;
}

Object::Object(napi_env e) : env(e) { check(env, napi_create_object(env, &value), "napi_create_object"); }

Object& Object::set(const char* key, napi_value v) {
  check(env, napi_set_named_property(env, value, key, v), "napi_set_named_property");
  return *this;
}

std::vector<Function>& registry() {
  static std::vector<Function> fns;
  return fns;
}

Register::Register(std::initializer_list<Function> fns) {
  for (const auto& f : fns) registry().push_back(f);
}

void expect(const Buffer* b, DType dtype, int64_t size, const char* name) {
  if (b->dtype != dtype) {
    throw TypeError(std::string(name) + " must be " + dtype_name(dtype) + ", got " + dtype_name(b->dtype));
  }
  if (size >= 0 && b->size != size) {
    throw RangeError(std::string(name) + " has " + std::to_string(b->size) + " elements, expected " + std::to_string(size));
  }
}

DType expect_float(const Buffer* b, int64_t size, const char* name) {
  if (b->dtype != DType::F32 && b->dtype != DType::BF16) {
    throw TypeError(std::string(name) + " must be float32 or bfloat16, got " + dtype_name(b->dtype));
  }
  expect(b, b->dtype, size, name);
  return b->dtype;
}

napi_value invoke(napi_env env, napi_callback_info info, Handler h) {
  try {
    Call call{env, {}};
    size_t argc = 24;
    napi_value argv[24];
    check(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr), "napi_get_cb_info");
    call.argv.assign(argv, argv + std::min<size_t>(argc, 24));
    return h(call);
  } catch (const std::exception& e) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) return nullptr;
    const auto* le = dynamic_cast<const Error*>(&e);
    const char* code = le ? le->code.c_str() : "ERR_LONGNET_CUDA";
    if (dynamic_cast<const RangeError*>(&e)) napi_throw_range_error(env, code, e.what());
    else if (dynamic_cast<const TypeError*>(&e)) napi_throw_type_error(env, code, e.what());
    else napi_throw_error(env, code, e.what());
    return nullptr;
  }
}

}  // namespace ln::js
