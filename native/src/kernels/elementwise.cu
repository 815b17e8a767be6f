#include "elementwise.h"

#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>

#include "element_types.cuh"
#include "launch_util.cuh"
#include "math.cuh"
#include "vector_access.cuh"

namespace ln {

namespace {

template <int OP>
__device__ __forceinline__ float unary_apply(float x) {
  switch (static_cast<UnaryOp>(OP)) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return expf(x);
    case UnaryOp::Log: return logf(x);
    case UnaryOp::Sqrt: return sqrtf(x);
    case UnaryOp::Rsqrt: return 1.0f / sqrtf(x);
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::Abs: return fabsf(x);
    case UnaryOp::Relu: return x > 0.0f ? x : 0.0f;
    case UnaryOp::Gelu: return gelu(x);
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + expf(-x));
    case UnaryOp::Square: return x * x;
    case UnaryOp::Reciprocal: return 1.0f / x;
  }
  return x;
}

template <int OP>
__device__ __forceinline__ float binary_apply(float a, float b) {
  switch (static_cast<BinaryOp>(OP)) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    // NaN in a wins, as in the CPU backend
    case BinaryOp::Maximum: return (a >= b || isnan(a)) ? a : b;
    case BinaryOp::Minimum: return (a <= b || isnan(a)) ? a : b;
    case BinaryOp::Pow: return js_pow(a, b);
    case BinaryOp::Greater: return a > b ? 1.0f : 0.0f;
    case BinaryOp::ReluBackward: return a > 0.0f ? b : 0.0f;
    case BinaryOp::GeluBackward: return b * gelu_derivative(a);
  }
  return a;
}

template <int OP, typename T>
__global__ void unary_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    stf(out[i], unary_apply<OP>(ldf(x[i])));
  }
}

template <int OP, typename T>
__global__ void binary_same_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    stf(out[i], binary_apply<OP>(ldf(a[i]), ldf(b[i])));
  }
}

template <int OP, int RANK, typename Index, typename T>
__global__ void binary_strided_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, StridedLayout l,
                                      Index n) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < n; i += Index(gridDim.x) * blockDim.x) {
    Index ia, ib;
    strided_offsets<RANK>(l, i, ia, ib);
    stf(out[i], binary_apply<OP>(ldf(a[ia]), ldf(b[ib])));
  }
}

template <int OP, typename T>
__global__ void binary_scalar_kernel(const T* __restrict__ a, float scalar, T* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    stf(out[i], binary_apply<OP>(ldf(a[i]), scalar));
  }
}

// The vector kernels: one 16-byte piece of each operand a step (kN = Pack<T>::kN elements; 8 for the casts,
// which mix types; 16-byte aligned operands, see vector_access.cuh), then the last n % kN elements one at a
// time. A grid-stride loop over steps: thread `first` of `stride`.
struct GridStride {
  int64_t first, stride;
  __device__ __forceinline__ GridStride()
      : first(blockIdx.x * int64_t(blockDim.x) + threadIdx.x), stride(int64_t(gridDim.x) * blockDim.x) {}
};

// out = f(x), element by element.
template <typename T, typename F>
__device__ __forceinline__ void map_pieces(const T* __restrict__ x, T* __restrict__ out, int64_t n, F f) {
  const GridStride g;
  constexpr int kN = Pack<T>::kN;
  for (int64_t v = g.first; v < n / kN; v += g.stride) {
    float e[kN];
    load_piece(x + kN * v, e);
#pragma unroll
    for (int j = 0; j < kN; j++) e[j] = f(e[j]);
    store_piece(out + kN * v, e);
  }
  for (int64_t i = n / kN * kN + g.first; i < n; i += g.stride) stf(out[i], f(ldf(x[i])));
}

template <int OP, typename T>
__global__ void unary_vec_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n) {
  map_pieces(x, out, n, [](float v) { return unary_apply<OP>(v); });
}

template <int OP, typename T>
__global__ void binary_vec_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n) {
  const GridStride g;
  constexpr int kN = Pack<T>::kN;
  for (int64_t v = g.first; v < n / kN; v += g.stride) {
    float fa[kN], fb[kN];
    load_piece(a + kN * v, fa);
    load_piece(b + kN * v, fb);
#pragma unroll
    for (int j = 0; j < kN; j++) fa[j] = binary_apply<OP>(fa[j], fb[j]);
    store_piece(out + kN * v, fa);
  }
  for (int64_t i = n / kN * kN + g.first; i < n; i += g.stride) stf(out[i], binary_apply<OP>(ldf(a[i]), ldf(b[i])));
}

template <int OP, typename T>
__global__ void binary_scalar_vec_kernel(const T* __restrict__ a, float scalar, T* __restrict__ out, int64_t n) {
  map_pieces(a, out, n, [scalar](float v) { return binary_apply<OP>(v, scalar); });
}

// float32 <-> bfloat16 (rounding to nearest even, as stf does)
template <typename From, typename To>
__global__ void cast_vec_kernel(const From* __restrict__ in, To* __restrict__ out, int64_t n) {
  const GridStride g;
  for (int64_t v = g.first; v < n / 8; v += g.stride) {
    float f[8];
    load8(in + 8 * v, f);
    store8(out + 8 * v, f);
  }
  for (int64_t i = n / 8 * 8 + g.first; i < n; i += g.stride) stf(out[i], ldf(in[i]));
}

// Blocks for a vector kernel over n elements, `per_step` a thread a step.
unsigned vec_grid(int64_t n, int per_step) { return grid_for(ceil_div(n, per_step)); }

// Calls f.template operator()<OP>() for the runtime op, so that each op is its own kernel.
template <typename F>
void dispatch_unary(UnaryOp op, F&& f) {
  switch (op) {
    case UnaryOp::Neg: return f.template operator()<0>();
    case UnaryOp::Exp: return f.template operator()<1>();
    case UnaryOp::Log: return f.template operator()<2>();
    case UnaryOp::Sqrt: return f.template operator()<3>();
    case UnaryOp::Rsqrt: return f.template operator()<4>();
    case UnaryOp::Tanh: return f.template operator()<5>();
    case UnaryOp::Abs: return f.template operator()<6>();
    case UnaryOp::Relu: return f.template operator()<7>();
    case UnaryOp::Gelu: return f.template operator()<8>();
    case UnaryOp::Sigmoid: return f.template operator()<9>();
    case UnaryOp::Square: return f.template operator()<10>();
    case UnaryOp::Reciprocal: return f.template operator()<11>();
  }
  fail("unknown unary op");
}

template <typename F>
void dispatch_binary(BinaryOp op, F&& f) {
  switch (op) {
    case BinaryOp::Add: return f.template operator()<0>();
    case BinaryOp::Sub: return f.template operator()<1>();
    case BinaryOp::Mul: return f.template operator()<2>();
    case BinaryOp::Div: return f.template operator()<3>();
    case BinaryOp::Maximum: return f.template operator()<4>();
    case BinaryOp::Minimum: return f.template operator()<5>();
    case BinaryOp::Pow: return f.template operator()<6>();
    case BinaryOp::Greater: return f.template operator()<7>();
    case BinaryOp::ReluBackward: return f.template operator()<8>();
    case BinaryOp::GeluBackward: return f.template operator()<9>();
  }
  fail("unknown binary op");
}

// JS ToInt32 of a truncated number: NaN and infinities give 0, others wrap modulo 2^32.
__host__ __device__ __forceinline__ int32_t to_int32(double v) {
  if (!(v == v) || v == INFINITY || v == -INFINITY) return 0;
  double t = trunc(v);
  double m = fmod(t, 4294967296.0);
  if (m < 0) m += 4294967296.0;
  uint32_t u = static_cast<uint32_t>(m);
  return static_cast<int32_t>(u);
}

template <typename T>
__device__ __forceinline__ double load_as_double(const T* p, int64_t i) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) return static_cast<double>(__bfloat162float(p[i]));
  else return static_cast<double>(p[i]);
}

template <typename T>
__device__ __forceinline__ void store_from_double(T* p, int64_t i, double v) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) p[i] = __float2bfloat16_rn(static_cast<float>(v));
  else if constexpr (std::is_same<T, int32_t>::value) p[i] = to_int32(v);
  else p[i] = static_cast<T>(v);
}

template <typename From, typename To>
__global__ void cast_kernel(const From* __restrict__ in, To* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same<From, float>::value && std::is_same<To, __nv_bfloat16>::value) {
      out[i] = __float2bfloat16_rn(in[i]);
    } else {
      store_from_double(out, i, load_as_double(in, i));
    }
  }
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ out, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = value;
  }
}

template <typename T>
__device__ __forceinline__ bool finite_value(T v) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) return isfinite(__bfloat162float(v));
  else return isfinite(v);
}

// Pieces a thread of the vector finiteness kernels reads at once: loads in flight, not one block a piece.
constexpr int kFinitePieces = 4;

// Whether this thread's share of x is finite: kFinitePieces 16-byte pieces a step where VEC (float32 or
// bfloat16, 16-byte aligned; the grid sized by with_vectors), then the rest one at a time.
template <bool VEC, typename T>
__device__ __forceinline__ bool thread_finite(const T* __restrict__ x, int64_t n) {
  const GridStride g;
  bool ok = true;
  int64_t begin = 0;
  if constexpr (VEC) {
    constexpr int kN = Pack<T>::kN;
    const int64_t pieces = n / kN;
    int64_t v = g.first;
    for (; v + (kFinitePieces - 1) * g.stride < pieces; v += kFinitePieces * g.stride) {
      float f[kFinitePieces][kN];
#pragma unroll
      for (int u = 0; u < kFinitePieces; u++) load_piece(x + kN * (v + u * g.stride), f[u]);
#pragma unroll
      for (int u = 0; u < kFinitePieces; u++) {
#pragma unroll
        for (int j = 0; j < kN; j++) ok &= isfinite(f[u][j]);
      }
    }
    for (; v < pieces; v += g.stride) {
      float f[kN];
      load_piece(x + kN * v, f);
#pragma unroll
      for (int j = 0; j < kN; j++) ok &= isfinite(f[j]);
    }
    begin = pieces * kN;
  }
  for (int64_t i = begin + g.first; i < n; i += g.stride) ok &= finite_value(x[i]);
  return ok;
}

template <bool VEC, typename T>
__global__ void all_finite_kernel(const T* __restrict__ x, int64_t n, int* flag) {
  if (!thread_finite<VEC>(x, n)) *flag = 0;
}

template <bool VEC, typename T>
__global__ void flag_non_finite_kernel(const T* __restrict__ x, int64_t n, int id, int* flag) {
  if (!__syncthreads_and(thread_finite<VEC>(x, n)) && threadIdx.x == 0) atomicMin(flag, id);
}

// Runs launch.template operator()<VEC>(blocks) with the vector finiteness kernels where x allows them.
template <typename T, typename Launch>
void with_vectors(const T* x, int64_t n, Launch&& launch) {
  if constexpr (!std::is_same<T, double>::value) {
    if (n >= 8 && vector_aligned({x})) return launch.template operator()<true>(vec_grid(n, Pack<T>::kN * kFinitePieces));
  }
  launch.template operator()<false>(grid_for(n));
}

template <typename T>
void typed(DType t, T&& f) {
  switch (t) {
    case DType::F32: return f(static_cast<float*>(nullptr));
    case DType::F64: return f(static_cast<double*>(nullptr));
    case DType::I32: return f(static_cast<int32_t*>(nullptr));
    case DType::BF16: return f(static_cast<__nv_bfloat16*>(nullptr));
  }
}

}  // namespace

void launch_unary(UnaryOp op, DType t, const void* x, void* out, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  float_typed(t, "unary", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    dispatch_unary(op, [&]<int OP>() {
      if (n >= 8 && vector_aligned({x, out})) {
        unary_vec_kernel<OP, T><<<vec_grid(n, Pack<T>::kN), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), n);
        return;
      }
      unary_kernel<OP, T><<<grid_for(n), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), n);
    });
  });
  check_launch("unary kernel");
}

void launch_binary(BinaryOp op, DType t, const void* a_, const void* b_, void* out_, const StridedLayout& l, int64_t n,
                   cudaStream_t s) {
  if (n == 0) return;
  const bool flat = l.rank == 1 && l.stride[0][0] == 1 && l.stride[1][0] == 1;
  const bool small = fits_int32(l, n);
  float_typed(t, "binary", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    const T* a = static_cast<const T*>(a_);
    const T* b = static_cast<const T*>(b_);
    T* out = static_cast<T*>(out_);
    dispatch_binary(op, [&]<int OP>() {
      if (flat && n >= 8 && vector_aligned({a, b, out})) {
        binary_vec_kernel<OP, T><<<vec_grid(n, Pack<T>::kN), kThreads, 0, s>>>(a, b, out, n);
        return;
      }
      if (flat) {
        binary_same_kernel<OP, T><<<grid_for(n), kThreads, 0, s>>>(a, b, out, n);
      } else if (!small) {
        binary_strided_kernel<OP, 0, int64_t, T><<<grid_for(n), kThreads, 0, s>>>(a, b, out, l, n);
      } else {
        dispatch_rank(l.rank, [&]<int RANK>() {
          binary_strided_kernel<OP, RANK, int32_t, T><<<grid_for(n), kThreads, 0, s>>>(a, b, out, l, static_cast<int32_t>(n));
        });
      }
    });
  });
  check_launch("binary kernel");
}

void launch_binary_scalar(BinaryOp op, DType t, const void* a, float scalar, void* out, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  float_typed(t, "binaryScalar", [&](auto* tag) {
    using T = element_of<decltype(tag)>;
    dispatch_binary(op, [&]<int OP>() {
      if (n >= 8 && vector_aligned({a, out})) {
        binary_scalar_vec_kernel<OP, T><<<vec_grid(n, Pack<T>::kN), kThreads, 0, s>>>(static_cast<const T*>(a), scalar, static_cast<T*>(out), n);
        return;
      }
      binary_scalar_kernel<OP, T><<<grid_for(n), kThreads, 0, s>>>(static_cast<const T*>(a), scalar, static_cast<T*>(out), n);
    });
  });
  check_launch("binaryScalar kernel");
}

void launch_fill(void* out, DType dtype, double value, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  switch (dtype) {
    case DType::F32: fill_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<float*>(out), static_cast<float>(value), n); break;
    case DType::F64: fill_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<double*>(out), value, n); break;
    case DType::I32: fill_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<int32_t*>(out), to_int32(value), n); break;
    case DType::BF16:
      fill_kernel<<<grid_for(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(out),
                                                    __float2bfloat16_rn(static_cast<float>(value)), n);
      break;
  }
  check_launch("fill kernel");
}

void launch_cast(const void* in, DType from, void* out, DType to, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  typed(from, [&](auto* f) {
    using From = std::remove_pointer_t<decltype(f)>;
    typed(to, [&](auto* t) {
      using To = std::remove_pointer_t<decltype(t)>;
      constexpr bool kFloats = (std::is_same<From, float>::value || std::is_same<From, __nv_bfloat16>::value) &&
                               (std::is_same<To, float>::value || std::is_same<To, __nv_bfloat16>::value);
      if constexpr (kFloats) {
        if (n >= 8 && vector_aligned({in, out})) {
          cast_vec_kernel<From, To><<<vec_grid(n, 8), kThreads, 0, s>>>(static_cast<const From*>(in), static_cast<To*>(out), n);
          return;
        }
      }
      cast_kernel<From, To><<<grid_for(n), kThreads, 0, s>>>(static_cast<const From*>(in), static_cast<To*>(out), n);
    });
  });
  check_launch("cast kernel");
}

void launch_all_finite(const void* x, DType dtype, int64_t n, int* flag, cudaStream_t s) {
  if (n == 0 || dtype == DType::I32) return;
  typed(dtype, [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
    if constexpr (!std::is_same<T, int32_t>::value) {
      const T* xt = static_cast<const T*>(x);
      with_vectors(xt, n, [&]<bool VEC>(unsigned blocks) { all_finite_kernel<VEC, T><<<blocks, kThreads, 0, s>>>(xt, n, flag); });
    }
  });
  check_launch("allFinite kernel");
}

void launch_flag_non_finite(const void* x, DType dtype, int64_t n, int id, int* flag, cudaStream_t s) {
  if (n == 0 || dtype == DType::I32) return;
  typed(dtype, [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
    if constexpr (!std::is_same<T, int32_t>::value) {
      const T* xt = static_cast<const T*>(x);
      with_vectors(xt, n, [&]<bool VEC>(unsigned blocks) { flag_non_finite_kernel<VEC, T><<<blocks, kThreads, 0, s>>>(xt, n, id, flag); });
    }
  });
  check_launch("checkFinite kernel");
}

}  // namespace ln
