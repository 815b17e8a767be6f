// Row-wise kernels over [rows, cols] (nn.cu, layer_norm.cu): each row is handled by GROUP consecutive
// threads, a warp for short rows and the whole block for long ones.
#pragma once

#include <cstdint>

#include "launch_util.cuh"

namespace ln {

struct RowSpot {
  int64_t row;
  int lane;
  bool valid;
};

template <int GROUP>
__device__ __forceinline__ RowSpot row_spot(int64_t rows) {
  constexpr int kRowsPerBlock = kThreads / GROUP;
  RowSpot r;
  r.row = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / GROUP;
  r.lane = threadIdx.x % GROUP;
  r.valid = r.row < rows;
  return r;
}

template <typename Launch>
void by_row_length(int64_t rows, int64_t cols, Launch&& launch) {
  if (cols <= 1024) {
    launch.template operator()<32>(static_cast<unsigned>(ceil_div(rows, kThreads / 32)));
  } else {
    launch.template operator()<kThreads>(static_cast<unsigned>(rows));
  }
}

}  // namespace ln
