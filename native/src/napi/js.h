// Node-API helpers: reading arguments, wrapping device buffers, turning C++ exceptions into JS ones.
#pragma once

#include <node_api.h>

#include <string>
#include <vector>

#include "../memory.h"
#include "../strided.h"

namespace ln::js {

struct Call {
  napi_env env;
  std::vector<napi_value> argv;

  napi_value at(size_t i) const;
  double number(size_t i, const char* name) const;
  int64_t integer(size_t i, const char* name) const;
  bool boolean(size_t i, const char* name) const;
  std::string string(size_t i, const char* name) const;
  Dims dims(size_t i, const char* name) const;
  // An array of finite numbers.
  std::vector<double> numbers(size_t i, const char* name) const;
  // A storage handle; throws on anything else and on a freed buffer.
  Buffer* buffer(size_t i, const char* name) const;
  // null or undefined give nullptr.
  Buffer* optional_buffer(size_t i, const char* name) const;
  // An array of storage handles, each checked as buffer() does.
  std::vector<Buffer*> buffers(size_t i, const char* name) const;
  bool is_nullish(size_t i) const;
};

using Handler = napi_value (*)(const Call&);

// Runs h, converting ln::Error and std::exception into a pending JS exception.
napi_value invoke(napi_env env, napi_callback_info info, Handler h);

template <Handler H>
napi_value entry(napi_env env, napi_callback_info info) {
  return invoke(env, info, H);
}

void check(napi_env env, napi_status status, const char* what);

napi_value wrap_buffer(napi_env env, Buffer* b);
// The buffer behind a handle without the freed check (for free itself).
Buffer* unwrap_buffer(napi_env env, napi_value v, const char* name);

napi_value undefined(napi_env env);
napi_value number(napi_env env, double v);
napi_value boolean(napi_env env, bool v);
napi_value string(napi_env env, const std::string& s);

// Builds a plain object field by field.
struct Object {
  napi_env env;
  napi_value value;
  explicit Object(napi_env e);
  Object& set(const char* key, napi_value v);
};

struct Function {
  const char* name;
  napi_callback fn;
};
// Each binding file lists its functions here; addon.cc puts them all on the module's exports.
std::vector<Function>& registry();
struct Register {
  Register(std::initializer_list<Function> fns);
};

// Throws unless the buffer holds `dtype`, and `size` elements when size >= 0.
void expect(const Buffer* b, DType dtype, int64_t size, const char* name);
// Float storage (float32 or bfloat16) of `size` elements (any size when negative); returns its dtype.
DType expect_float(const Buffer* b, int64_t size, const char* name);

}  // namespace ln::js
