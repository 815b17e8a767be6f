// The fused AdamW update (decoupled weight decay, bias-corrected), as src/backend/cpu/nn.ts: one tensor, or
// many in one launch.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace ln {

struct AdamWArgs {
  float lr, beta1, beta2, eps, decay;  // decay = 1 - lr * weightDecay
  float bias1, bias2;                  // 1 - beta^step
  float grad_scale;                    // the gradient is multiplied by it first (global-norm clipping)
  // Multi-tensor update only: with clip_squares (on the device: the sum of the squares of every gradient),
  // grad_scale is multiplied by max_norm / (norm + 1e-6) where the norm is above max_norm > 0, and where
  // the norm is not finite nothing is updated (a diverged step, which the host refuses once it reads it).
  const float* clip_squares;
  float max_norm;
};

// Updates param, m and v in place.
void launch_adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a, cudaStream_t s);

// One tensor of a multi-tensor update, with its own decay (1 - lr * its weight decay), and optionally a
// bfloat16 copy of the parameter that the update rewrites (round to nearest even) with the new values.
struct AdamWTensor {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t n;
  float decay;
  __nv_bfloat16* copy;
};

// launch_adamw on every tensor, bit for bit, in one launch (each tensor's decay replaces a.decay): the
// blocks walk the tensors' concatenated elements through a table on the device.
void launch_adamw_multi(const std::vector<AdamWTensor>& tensors, const AdamWArgs& a, cudaStream_t s);

}  // namespace ln
