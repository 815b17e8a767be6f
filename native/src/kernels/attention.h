// Dilated attention (docs/ATTENTION.md) on [batch, seq, heads, headDim] float32 tensors.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace ln {

struct AttentionShape {
  int64_t batch, seq;
  int heads, head_dim;
};

struct AttentionPattern {
  int64_t segment;   // w
  int64_t dilation;  // r
};

struct AttentionOptions {
  std::vector<AttentionPattern> patterns;
  bool causal;
  float scale;
  bool blocked_offsets;  // torchscale's head offsets instead of the paper's h mod r
};

// The largest head dimension the kernels take.
constexpr int kMaxHeadDim = 256;

// Writes o [B, N, H, D] and lse [B, N, H] (natural log, -inf where no pattern selects the row).
void launch_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, const AttentionShape& shape,
                              const AttentionOptions& opt, cudaStream_t s);

// Writes dq, dk, dv (each [B, N, H, D]) given the forward's o and lse and the output gradient d_o.
void launch_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse, const float* d_o,
                               float* dq, float* dk, float* dv, const AttentionShape& shape, const AttentionOptions& opt,
                               cudaStream_t s);

}  // namespace ln
