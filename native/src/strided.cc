#include "strided.h"

namespace ln {

int64_t product(const Dims& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Dims contiguous_strides(const Dims& shape) {
  Dims s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

Dims broadcast_strides(const Dims& shape, const Dims& out) {
  if (shape.size() > out.size()) fail("broadcast: operand has more dimensions than the result");
  Dims own = contiguous_strides(shape);
  Dims s(out.size(), 0);
  size_t offset = out.size() - shape.size();
  for (size_t i = 0; i < shape.size(); i++) {
    if (shape[i] == out[i + offset]) s[i + offset] = shape[i] == 1 ? 0 : own[i];
    else if (shape[i] == 1) s[i + offset] = 0;
    else fail("broadcast: operand dimension " + std::to_string(shape[i]) + " does not match " + std::to_string(out[i + offset]));
  }
  return s;
}

StridedLayout collapse(const Dims& shape, const std::vector<Dims>& strides, const char* what) {
  const int ops = static_cast<int>(strides.size());
  if (ops > kMaxOperands) fail("collapse: too many operands");
  // keep only dimensions longer than 1
  Dims sh;
  std::vector<Dims> st(ops);
  for (size_t i = 0; i < shape.size(); i++) {
    if (shape[i] == 1) continue;
    sh.push_back(shape[i]);
    for (int j = 0; j < ops; j++) st[j].push_back(strides[j][i]);
  }
  // merge dimension i into i+1 when every operand steps over i+1 exactly once per step of i
  Dims msh;
  std::vector<Dims> mst(ops);
  for (size_t i = 0; i < sh.size(); i++) {
    bool merge = !msh.empty();
    for (int j = 0; j < ops && merge; j++) merge = mst[j].back() == st[j][i] * sh[i];
    if (merge) {
      msh.back() *= sh[i];
      for (int j = 0; j < ops; j++) mst[j].back() = st[j][i];
    } else {
      msh.push_back(sh[i]);
      for (int j = 0; j < ops; j++) mst[j].push_back(st[j][i]);
    }
  }
  if (msh.empty()) {
    msh.push_back(1);
    for (int j = 0; j < ops; j++) mst[j].push_back(0);
  }
  if (msh.size() > static_cast<size_t>(kMaxDims)) {
    fail(std::string(what) + ": more than " + std::to_string(kMaxDims) + " non-mergeable dimensions");
  }
  StridedLayout l{};
  l.rank = static_cast<int>(msh.size());
  l.operands = ops;
  for (int i = 0; i < l.rank; i++) {
    l.shape[i] = msh[i];
    for (int j = 0; j < ops; j++) l.stride[j][i] = mst[j][i];
  }
  return l;
}

}  // namespace ln
