// Hopper warpgroup matrix products (wgmma, sm_90a) and what they need: shared-memory matrix descriptors
// for the 128-byte swizzled layout, the fences and commit/wait of the asynchronous products, and a strided
// row loader that writes that layout. The products and fences compile to nothing outside sm_90a code
// (LN_HAVE_WGMMA), where the launchers run the mma.sync kernels instead; image_has_wgmma tells them which.
//
// Layout (PTX ISA, "matrix descriptor"): tiles of 128-byte rows (64 bf16) in 1024-byte atoms of 8 rows;
// the 16-byte chunk c of row r sits at chunk c ^ (r % 8). Atoms start 1024-byte aligned, since the
// hardware swizzles absolute address bits [4:6] with [7:9]; so a start moved by 32 or 64 bytes within a
// row stays consistent with where the chunks were stored. Such a tile serves as
//  - a K-major operand (the reduced index runs along the row, as Q and K for S = Q K^T): groups of 8 rows
//    1024 bytes apart (stride byte offset); the next 16 reduced elements start 32 bytes on;
//  - an MN-major operand (the reduced index runs down the rows, as V for O += P V): groups of 8 reduced
//    rows 1024 bytes apart, the leading byte offset is the stride between 64-column blocks (one block at
//    head dim 64); the next 16 reduced rows start 2048 bytes on.
// Accumulators of m64nNk16 (fp32), per warp w of the warpgroup (g = lane / 4, c = lane % 4): d[4n + e] is
// row 16w + g + 8(e / 2), column 8n + 2c + (e % 2): per 8-column tile an mma.m16n8k16 C fragment, so two
// neighbouring tiles packed to bf16 are a register A fragment.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "../common.h"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LN_HAVE_WGMMA 1
#endif

namespace ln::flash::wg {

// Byte offset of 16-byte chunk `chunk` of row `row` in a 128-byte-swizzled tile.
__device__ __forceinline__ uint32_t swz(int row, int chunk) { return uint32_t(row) * 128u + (uint32_t(chunk ^ (row & 7)) << 4); }

// Matrix descriptor with the 128-byte swizzle: start address, leading and stride byte offsets.
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((smem_addr & 0x3FFFFu) >> 4) | (uint64_t((lbo >> 4) & 0x3FFFu) << 16) | (uint64_t((sbo >> 4) & 0x3FFFu) << 32) |
         (uint64_t(1) << 62);
}
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t smem_addr) { return make_desc(smem_addr, 16, 1024); }
__device__ __forceinline__ uint64_t desc_mnmajor(uint32_t smem_addr) { return make_desc(smem_addr, 1024, 1024); }
// A descriptor moved `bytes` further (the start address is the low field; no carry out of it here).
__device__ __forceinline__ uint64_t desc_plus(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }

#ifdef LN_HAVE_WGMMA
// Orders register writes by ordinary instructions before the products that read those registers.
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups of products are pending.
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes this thread's shared-memory writes (cp.async, stores) visible to the tensor cores' (async proxy) reads.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#else
__device__ __forceinline__ void fence() {}
__device__ __forceinline__ void commit() {}
template <int N>
__device__ __forceinline__ void wait() {}
__device__ __forceinline__ void fence_proxy_async() {}
#endif

// Keeps the compiler from moving reads or writes of accumulators across a wait (the products write them
// asynchronously).
template <int N>
__device__ __forceinline__ void fence_operand(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// d (64 x 64, fp32) = (accumulate ? d : 0) + A B, A and B from shared memory (TA, TB: 1 = MN-major).
template <int TA, int TB>
__device__ __forceinline__ void mma_ss_n64(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
#ifdef LN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, "
      "%26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),
        "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(accumulate), "n"(TA), "n"(TB));
#endif
}

// d (64 x 32, fp32) = (accumulate ? d : 0) + A B, both from shared memory.
template <int TA, int TB>
__device__ __forceinline__ void mma_ss_n32(float (&d)[16], uint64_t a, uint64_t b, int accumulate) {
#ifdef LN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %19, %20;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),
        "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(accumulate), "n"(TA), "n"(TB));
#endif
}

// d (64 x 128, fp32) = (accumulate ? d : 0) + A B, both from shared memory.
template <int TA, int TB>
__device__ __forceinline__ void mma_ss_n128(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
#ifdef LN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, "
      "%26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, "
      "%51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),
        "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]),
        "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(accumulate), "n"(TA), "n"(TB));
#endif
}

// d (64 x 64, fp32) = (accumulate ? d : 0) + A B, A (64 x 16 bf16) from registers in the mma.sync
// A-fragment layout per warp (warp w holds rows 16w..16w+15), B from shared memory (TB: 1 = MN-major).
template <int TB>
__device__ __forceinline__ void mma_rs_n64(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int accumulate = 1) {
#ifdef LN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, "
      "%26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %37;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),
        "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
        "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TB), "r"(accumulate));
#endif
}

// Four 8 x 8 bf16 matrices held as mma fragments (r[i]: matrix i, lane l its row l / 4, columns 2 (l % 4)
// and + 1) into shared memory; lane l gives the 16-byte address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void store_matrices(uint32_t smem_addr, const uint32_t (&r)[4]) {
#ifdef LN_HAVE_WGMMA
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n"
               ::"r"(smem_addr), "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
               : "memory");
#endif
}

// A block's view of a strided set of 64-element bf16 rows (row t at element (row0 + t * stride) * 64 of
// src, rows 0 .. n - 1) for the swizzled tile loads below. Thread i always copies the 16-byte piece i % 8
// of rows i / 8 + k * THREADS / 8, so its own source address is worked out here, once a block; a tile
// load then costs one product to reach its first row and a few instructions a copy.
struct StridedRows {
  const __nv_bfloat16* src;   // a valid address, the source of the zero-filled copies past the end
  const __nv_bfloat16* mine;  // this thread's piece of its first row (t = threadIdx.x / 8)
  int64_t row_elems;          // elements from one row to the next: stride * 64
  int64_t n;
};

__device__ __forceinline__ StridedRows strided_rows(const __nv_bfloat16* src, int64_t row0, int64_t stride, int64_t n) {
  const int piece = threadIdx.x % 8, row_in = threadIdx.x / 8;
  return {src, src + (row0 + row_in * stride) * 64 + piece * 8, stride * 64, n};
}

// Rows t0 .. t0 + ROWS - 1 of `rows` into the 128-byte-swizzled layout at dst (1024-byte aligned), by a
// block of THREADS; rows at or past n read as zeros.
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_rows_sw128(void* dst, const StridedRows& rows, int64_t t0) {
  static_assert(ROWS * 8 % THREADS == 0 && THREADS % 64 == 0, "whole passes; a thread's rows keep their residue mod 8");
  constexpr int kPassRows = THREADS / 8;
  const int piece = threadIdx.x % 8, row_in = threadIdx.x / 8;
  // rows row_in + u * kPassRows keep row_in's residue mod 8, so their swizzled chunk is row_in's
  const uint32_t at = static_cast<uint32_t>(__cvta_generic_to_shared(dst)) + swz(row_in, piece);
  const int left = static_cast<int>(max(min(rows.n - t0, int64_t(ROWS)), int64_t(0)));
  const __nv_bfloat16* from = rows.mine + t0 * rows.row_elems;
  const int64_t pass = kPassRows * rows.row_elems;
#pragma unroll
  for (int u = 0; u < ROWS * 8 / THREADS; u++, from += pass) {
    const bool valid = row_in + u * kPassRows < left;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(at + u * kPassRows * 128), "l"(valid ? from : rows.src),
                 "r"(valid ? 16 : 0));
  }
}

template <int ROWS, int THREADS>
__device__ __forceinline__ void load_rows_sw128(void* dst, const __nv_bfloat16* src, int64_t row0, int64_t stride, int64_t n, int64_t t0) {
  load_rows_sw128<ROWS, THREADS>(dst, strided_rows(src, row0, stride, n), t0);
}

// Whether the driver loaded, for the running GPU, the sm_90a image of the file that includes this header
// (the image whose wgmma kernels have bodies): each file has its own flag, 1 in that image and 0 in the
// others (sm_80, and compute_90 PTX compiled for another GPU). Read on the host, once by each launcher.
namespace {
__device__ int g_image_has_wgmma =
#ifdef LN_HAVE_WGMMA
    1;
#else
    0;
#endif

[[maybe_unused]] bool image_has_wgmma() {
  int flag = 0;
  check_cuda(cudaMemcpyFromSymbol(&flag, g_image_has_wgmma, sizeof(int)), "cudaMemcpyFromSymbol (wgmma image)");
  return flag == 1;
}
}  // namespace

}  // namespace ln::flash::wg
