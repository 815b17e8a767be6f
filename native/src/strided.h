// Shapes and strides for kernels that walk an n-dimensional index space (broadcasting, permutes, slices).
#pragma once

#include <cstdint>
#include <vector>

#include "common.h"

namespace ln {

constexpr int kMaxOperands = 3;

// Passed to kernels by value. Dimension 0 is the outermost; strides are in elements.
struct StridedLayout {
  int rank;
  int operands;
  int64_t shape[kMaxDims];
  int64_t stride[kMaxOperands][kMaxDims];
};

using Dims = std::vector<int64_t>;

int64_t product(const Dims& shape);
Dims contiguous_strides(const Dims& shape);
// The strides of `shape` seen from the broadcast `out` shape (0 where broadcast).
Dims broadcast_strides(const Dims& shape, const Dims& out);

// Drops length-1 dimensions and merges neighbours that are contiguous in every operand, so that the
// kernels do as little index arithmetic as possible. Throws when more than kMaxDims remain.
StridedLayout collapse(const Dims& shape, const std::vector<Dims>& strides, const char* what);

}  // namespace ln
