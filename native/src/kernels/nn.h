// Row-wise kernels over [rows, cols] (softmax, cross-entropy; layer norm is in layer_norm.h) and embeddings.
// Semantics follow src/backend/cpu/nn.ts.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common.h"
#include "../device.h"

namespace ln {

void launch_softmax(const float* x, float* out, int64_t rows, int64_t cols, bool log, cudaStream_t s);
void launch_softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log, cudaStream_t s);

// Cross-entropy takes float32 or bfloat16 storage `t` for the logits and their gradient (float arithmetic);
// loss, lse and d_loss are float32.
// The softmax runs over the first `classes` columns of each row (1 <= classes <= cols); the columns past
// it are padding (a vocabulary padded for aligned matrix products): outside the loss, gradient 0.
// A target outside [0, classes) other than ignore_index fails `check` (device.h) with its row and value,
// and gives a NaN loss.
void launch_cross_entropy(DType t, const void* logits, const int32_t* targets, float* loss, float* lse, int64_t rows, int64_t cols,
                          int64_t classes, int32_t ignore_index, const QueuedCheck& check, cudaStream_t s);
void launch_cross_entropy_backward(DType t, const void* logits, const int32_t* targets, const float* lse, const float* d_loss,
                                   void* d_logits, int64_t rows, int64_t cols, int64_t classes, int32_t ignore_index,
                                   cudaStream_t s);
// launch_cross_entropy and, from the same reads, the gradient launch_cross_entropy_backward gives (up to
// float rounding) for d_loss = *weight on every row (1 when weight is null): for a backward seeded with 1,
// which then has nothing to do.
void launch_cross_entropy_with_grad(DType t, const void* logits, const int32_t* targets, const float* weight, float* loss, float* lse,
                                    void* d_logits, int64_t rows, int64_t cols, int64_t classes, int32_t ignore_index,
                                    const QueuedCheck& check, cudaStream_t s);

// An index outside [0, table_rows) fails `check` (device.h) with its position and value, and is skipped
// (gather gives NaN there); table_rows may be less than the table's rows, to refuse its padding rows.
void launch_gather(const float* table, int64_t table_rows, int64_t cols, const int32_t* indices, int64_t count, float* out,
                   const QueuedCheck& check, cudaStream_t s);
// out must be zeroed; rows are added with atomics.
void launch_scatter_add(const float* d_out, const int32_t* indices, int64_t count, int64_t table_rows, int64_t cols, float* out,
                        const QueuedCheck& check, cudaStream_t s);

}  // namespace ln
