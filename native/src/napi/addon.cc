// The module's entry point: every binding file registers its functions in js::registry().
#include <node_api.h>

#include "js.h"

namespace {

napi_value init_module(napi_env env, napi_value exports) {
  for (const auto& f : ln::js::registry()) {
    napi_value fn;
    if (napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.fn, nullptr, &fn) != napi_ok) return nullptr;
    if (napi_set_named_property(env, exports, f.name, fn) != napi_ok) return nullptr;
  }
  napi_value version;
  if (napi_create_uint32(env, 15, &version) == napi_ok) napi_set_named_property(env, exports, "abiVersion", version);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
