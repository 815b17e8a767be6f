#include "dynload.h"

#include <dlfcn.h>

#include <cstdlib>

#include "../common.h"

namespace ln {

Library open_library(const char* env_var, const std::vector<std::string>& names) {
  Library lib;
  std::vector<std::string> tries;
  const char* override_path = env_var ? std::getenv(env_var) : nullptr;
  if (override_path && *override_path) tries.emplace_back(override_path);
  tries.insert(tries.end(), names.begin(), names.end());
  std::string errors;
  for (const auto& name : tries) {
    dlerror();
    void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) {
      lib.handle = h;
      lib.path = name;
      return lib;
    }
    const char* e = dlerror();
    if (errors.empty()) errors = e ? e : name + ": not found";
  }
  lib.error = errors;
  return lib;
}

void* find_symbol(const Library& lib, const char* name, bool required) {
  dlerror();
  void* p = dlsym(lib.handle, name);
  if (!p && required) fail(std::string("symbol ") + name + " not found in " + lib.path);
  return p;
}

}  // namespace ln
