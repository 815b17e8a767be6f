// Packed (varlen) attention over groups of rows and the log-sum-exp merge of partial results: the
// primitives of sequence-parallel attention (Backend.gatheredAttention, gatheredAttentionBackward,
// mergeAttention in src/backend/backend.ts). Rows are [rows, D] float32.
//
// Group g pairs query rows [qOffsets[g], qOffsets[g+1]) with key rows [kOffsets[g], kOffsets[g+1]).
// With a causal mask aligned bottom-right, of mq queries and mk keys the first max(0, mq - mk) queries
// see nothing (o = 0, lse = -inf); the other m see keys [0, mk - m) and query i of them (0-based) also
// keys mk - m .. mk - m + i.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace ln {

struct GatheredArgs {
  const int32_t* q_offsets;  // device, groups + 1
  const int32_t* k_offsets;  // device, groups + 1
  const int32_t* tiles;      // device, pairs (group, first row of the tile)
  int64_t tile_count;
  int head_dim;
  bool causal;
  float scale;
};

// o and lse must hold 0 and -inf beforehand (rows no tile covers keep them). tiles: query tiles of 16.
void launch_gathered_forward(const float* q, const float* k, const float* v, float* o, float* lse, const GatheredArgs& a,
                             cudaStream_t s);

// dq, dk, dv must hold 0 beforehand. q_tiles: query tiles of 16 (dq); k_tiles: key tiles of 16 (dk, dv).
void launch_gathered_backward(const float* q, const float* k, const float* v, const float* lse, const float* dsum, const float* d_o,
                              float* dq, float* dk, float* dv, const GatheredArgs& q_tiles, const int32_t* k_tiles,
                              int64_t k_tile_count, cudaStream_t s);

// In place: row rows[i] of (acc_o, acc_lse) absorbs packed row i of (o, lse).
void launch_merge_attention(float* acc_o, float* acc_lse, const float* o, const float* lse, const int32_t* rows, int64_t count,
                            int64_t total_rows, int head_dim, cudaStream_t s);

}  // namespace ln
