// The fused AdamW update (decoupled weight decay, bias-corrected), as src/backend/cpu/nn.ts.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace ln {

struct AdamWArgs {
  float lr, beta1, beta2, eps, decay;  // decay = 1 - lr * weightDecay
  float bias1, bias2;                  // 1 - beta^step
  float grad_scale;                    // the gradient is multiplied by it first (global-norm clipping)
};

// Updates param, m and v in place.
void launch_adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a, cudaStream_t s);

}  // namespace ln
