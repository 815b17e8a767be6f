#include "optimizer.h"

#include "launch_util.cuh"

namespace ln {

namespace {

__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                             int64_t n, AdamWArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] * a.grad_scale;
    const float mi = a.beta1 * m[i] + (1.0f - a.beta1) * gi;
    const float vi = a.beta2 * v[i] + (1.0f - a.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * a.decay - a.lr * (mi / a.bias1) / (sqrtf(vi / a.bias2) + a.eps);
  }
}

}  // namespace

void launch_adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWArgs& a, cudaStream_t s) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), kThreads, 0, s>>>(param, grad, m, v, n, a);
  check_launch("adamw kernel");
}

}  // namespace ln
