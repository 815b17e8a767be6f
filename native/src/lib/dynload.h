// Opening shared libraries by a list of candidate names, and typed symbol lookup.
#pragma once

#include <string>
#include <vector>

namespace ln {

struct Library {
  void* handle = nullptr;
  std::string path;   // the name that opened
  std::string error;  // why none opened
};

// Tries `env_var` (a path) first when set, then each name in turn.
Library open_library(const char* env_var, const std::vector<std::string>& names);

void* find_symbol(const Library& lib, const char* name, bool required);

template <typename F>
void bind_symbol(const Library& lib, F& slot, const char* name, bool required = true) {
  slot = reinterpret_cast<F>(find_symbol(lib, name, required));
}

}  // namespace ln
