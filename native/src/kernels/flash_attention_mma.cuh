// Tensor-core building blocks of the fused attention kernels: asynchronous tile loads of strided rows,
// ldmatrix fragment loads and the bf16 m16n8k16 matrix product with fp32 accumulation.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, c = lane % 4):
//   A (16 x 16): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 2c+8..), a3 = (g+8, 2c+8..)
//   B (16 x 8, k x n): b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g)
//   C (16 x 8, fp32): c0, c1 = (g, 2c..2c+1), c2, c3 = (g+8, 2c..2c+1)
// The C fragments of two neighbouring 8-column tiles are, packed to bf16, exactly the A fragment of the
// 16 columns they cover: that is how P feeds the next product without leaving registers.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "attention_common.cuh"

namespace ln::flash {

using bf16 = __nv_bfloat16;

constexpr int kKeyTile = 64;  // keys a forward block streams per step; queries a backward block streams per step
constexpr int kPad = 8;       // bf16 elements of padding per shared row: ldmatrix rows land in distinct banks

__device__ __forceinline__ uint32_t smem_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared without passing through registers; zero-filled when !valid.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src), "r"(valid ? 16 : 0));
}
// 4 bytes global -> shared; zero-filled when !valid.
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_address(dst)), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Rows t0 .. t0 + ROWS - 1 of a strided row set (row t at element (row0 + t * stride) * D: for a dilated
// pattern the stride is r*H, dilation is just a stride) into shared [ROWS][D + kPad], by a block of
// THREADS; rows at or past n read as zeros.
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile_async(bf16* dst, const bf16* __restrict__ src, int64_t row0, int64_t stride, int64_t n,
                                                int64_t t0) {
  constexpr int chunks = D / 8;  // 16-byte pieces per row
#pragma unroll
  for (int i = threadIdx.x; i < ROWS * chunks; i += THREADS) {
    const int row = i / chunks, piece = i % chunks;
    const int64_t t = t0 + row;
    const bool valid = t < n;
    const bf16* from = valid ? src + (row0 + t * stride) * D + piece * 8 : src;
    cp_async16(dst + row * (D + kPad) + piece * 8, from, valid);
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// c += a * b (bf16 operands, fp32 accumulators).
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// A fragment of the 16 x 16 block at (row0, col0) of a row-major shared matrix with leading dimension ld.
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* m, int ld, int row0, int col0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4(a, m + (row0 + lane % 8 + (lane / 8) % 2 * 8) * ld + col0 + lane / 16 * 8);
}

// A fragment of the 16 x 16 block at (row0, col0) of the transpose of a row-major shared matrix M
// (rows of A are columns of M).
__device__ __forceinline__ void load_a_trans(uint32_t (&a)[4], const bf16* m, int ld, int row0, int col0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4_trans(a, m + (col0 + lane % 8 + lane / 16 * 8) * ld + row0 + (lane / 8) % 2 * 8);
}

// B fragments of two 8-column tiles (n0 .. n0+15) over k0 .. k0+15, with B[k][n] = M[n][k] for a row-major
// shared M (keys as rows, as K is stored): b[0], b[1] for columns n0.., b[2], b[3] for n0+8...
__device__ __forceinline__ void load_b_rows(uint32_t (&b)[4], const bf16* m, int ld, int n0, int k0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4(b, m + (n0 + lane % 8 + lane / 16 * 8) * ld + k0 + (lane / 8) % 2 * 8);
}

// The same with B[k][n] = M[k][n] (V stored with the reduced index as rows).
__device__ __forceinline__ void load_b_cols(uint32_t (&b)[4], const bf16* m, int ld, int n0, int k0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4_trans(b, m + (k0 + lane % 8 + (lane / 8) % 2 * 8) * ld + n0 + lane / 16 * 8);
}

// Packs the fp32 C fragments of 8-column tiles 2j and 2j+1 into the bf16 A fragment of those 16 columns.
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// Reductions over the four lanes that share a row of a C fragment.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Calls f.template operator()<D, CAUSAL>() for the head dimensions the fused kernels are built for.
template <typename F>
void dispatch_flash(int dim, bool causal, F&& f) {
  auto with_dim = [&]<int D>() { return causal ? f.template operator()<D, true>() : f.template operator()<D, false>(); };
  if (dim == 32) return with_dim.template operator()<32>();
  if (dim == 64) return with_dim.template operator()<64>();
  if (dim == 128) return with_dim.template operator()<128>();
  throw RangeError("fused dilated attention supports headDim 32, 64 and 128, got " + std::to_string(dim));
}

}  // namespace ln::flash
