// Fused dilated attention on tensor cores (docs/ATTENTION.md): bf16 q, k, v read straight from the
// [B, N, H, D] tensors (a pattern's selected rows are a tile with row stride r*H*D), fp32 accumulation,
// patterns merged through the log-sum-exp with no per-pattern tensors in memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "../common.h"
#include "attention.h"

namespace ln {

// Head dimensions the fused kernels are built for.
inline bool flash_attention_supports(int head_dim) { return head_dim == 32 || head_dim == 64 || head_dim == 128; }

// Writes o [B, N, H, D] in fp32 (it is also the accumulator the patterns merge into) and lse [B, N, H]
// (natural log, -inf where no pattern selects the row). Overwrites both; no initialisation needed.
void launch_flash_attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, float* o, float* lse,
                                    const AttentionShape& shape, const AttentionOptions& opt, cudaStream_t s);

// The same with the output's element type chosen (F32, or BF16: patterns then merge in bf16 storage, for
// near-floor memory) and, with `accumulate`, merging into o and lse as they stand (a previous result, or
// 0 and -inf) instead of starting afresh: how local and gathered partial results combine.
void launch_flash_attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, void* o, DType o_type,
                                    float* lse, const AttentionShape& shape, const AttentionOptions& opt, bool accumulate,
                                    cudaStream_t s);

// One attention problem in packed form, rows counted in head-dim rows (D elements): n_q query rows at
// q_row0 + i * q_stride (of q, and of o and lse), n_k key rows at k_row0 + j * k_stride (of k and v).
// Causal: key j is visible to query i iff j <= i + n_k - n_q (the queries are the last n_q positions).
struct FlashProblem {
  int64_t q_row0, q_stride, n_q;
  int64_t k_row0, k_stride, n_k;
};

// Merges every problem's attention into o and lse (which hold a previous result, or 0 and -inf). The
// problems' query rows must be distinct. Queries with no visible key are left as they are.
void launch_flash_problems_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, void* o, DType o_type,
                                   float* lse, const std::vector<FlashProblem>& problems, int head_dim, bool causal, float scale,
                                   cudaStream_t s);

// Given the forward's lse and dsum = rowsum(dO * O) per (token, head) (fp32, [B, N, H]), writes the exact
// gradients dq, dk, dv [B, N, H, D] in fp32. Overwrites them; no initialisation needed.
void launch_flash_attention_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                                     const __nv_bfloat16* d_o, const float* lse, const float* dsum, float* dq, float* dk, float* dv,
                                     const AttentionShape& shape, const AttentionOptions& opt, cudaStream_t s);

}  // namespace ln
