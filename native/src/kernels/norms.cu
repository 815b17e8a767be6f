#include "norms.h"

#include <algorithm>

#include "../memory.h"
#include "launch_util.cuh"

namespace ln {

namespace {

// Elements a block takes at least: small tensors get one block, large ones up to kMaxBlocks.
constexpr int64_t kPerBlock = int64_t(kThreads) * 16;
constexpr int64_t kMaxBlocks = 512;

// One tensor's share of the work: its blocks are [first_block, first_block + blocks), `chunk` elements each.
struct Piece {
  const float* x;
  int64_t n;
  int64_t first_block;
  int64_t blocks;
  int64_t chunk;
};

// Block b finds its piece by binary search over first_block, and writes the sum of squares of its
// chunk of that piece to partial[b].
__global__ void squares_partial_kernel(const Piece* __restrict__ pieces, int count, double* __restrict__ partial) {
  int lo = 0, hi = count - 1;
  const int64_t b = blockIdx.x;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (pieces[mid].first_block <= b) lo = mid;
    else hi = mid - 1;
  }
  const Piece p = pieces[lo];
  const int64_t begin = (b - p.first_block) * p.chunk, end = min(p.n, begin + p.chunk);
  double acc = 0.0;
  for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
    const double v = p.x[j];
    acc += v * v;
  }
  acc = group_sum<kThreads>(acc);
  if (threadIdx.x == 0) partial[b] = acc;
}

// Thread i adds up piece i's partials in order.
__global__ void squares_final_kernel(const Piece* __restrict__ pieces, int count, const double* __restrict__ partial,
                                     float* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  double acc = 0.0;
  for (int64_t b = 0; b < pieces[i].blocks; b++) acc += partial[pieces[i].first_block + b];
  out[i] = static_cast<float>(acc);
}

}  // namespace

void launch_sums_of_squares(const std::vector<const float*>& xs, const std::vector<int64_t>& sizes, float* out, cudaStream_t s) {
  const int count = static_cast<int>(xs.size());
  if (count == 0) return;
  std::vector<Piece> pieces(count);
  int64_t total_blocks = 0;
  for (int i = 0; i < count; i++) {
    const int64_t blocks = std::clamp<int64_t>(ceil_div(sizes[i], kPerBlock), 1, kMaxBlocks);
    pieces[i] = {xs[i], sizes[i], total_blocks, blocks, ceil_div(sizes[i], blocks)};
    total_blocks += blocks;
  }
  if (total_blocks > INT32_MAX) fail("sums of squares: too many blocks");
  static_assert(sizeof(Piece) % sizeof(double) == 0, "the partials after the table stay aligned");
  const size_t piece_bytes = pieces.size() * sizeof(Piece), partial_bytes = size_t(total_blocks) * sizeof(double);
  const Scratch scratch(piece_bytes + partial_bytes);  // stream-ordered, as the packed forward's table
  auto* table = scratch.as<Piece>();
  auto* partial = reinterpret_cast<double*>(scratch.as<unsigned char>() + piece_bytes);
  check_cuda(cudaMemcpyAsync(table, pieces.data(), piece_bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
  squares_partial_kernel<<<static_cast<unsigned>(total_blocks), kThreads, 0, s>>>(table, count, partial);
  check_launch("sums of squares kernel");
  squares_final_kernel<<<static_cast<unsigned>(ceil_div(count, kThreads)), kThreads, 0, s>>>(table, count, partial, out);
  check_launch("sums of squares final kernel");
}

}  // namespace ln
