// bias_act on CUDA: y = clamp(act(x + b) * gain, -clamp, clamp) (G=0), its first (G=1) and second
// (G=2) order gradients, and the bias gradient fused into the gradient kernels.
//
// Layout: x, y, g, dy are dense with identical strides (contiguous or channels_last; the Python
// wrapper guarantees it). The element at memory offset o has channel (o / inner) % C with
// C = size(dim), inner = stride(dim). Kernels:
//   flat_kernel     element-wise (forward; gradients without a bias gradient), grid-stride, 16-byte
//                   vector loads/stores when aligned; the channel is tracked per vector, not divided
//                   per element.
//   rows_db_kernel  inner > 1 (NCHW, dim=1): block (c, s) handles channel c on rows s, s+split, ...
//                   (vectorized along the contiguous inner dim), block-reduces its partial sum.
//   cl_db_kernel    inner == 1 (channels_last dim=1, or the last dim): [M, C] row-major; a 32x8 block
//                   covers 32 channels x 8 rows per step, coalesced along C; smem reduction.
// Partials go to [split, C] (float, or double for double) and are summed by at::sum: a deterministic
// two-pass reduction, no atomics. half/bfloat16 compute in float. Sizes below 2^31 elements (the
// Python wrapper routes larger tensors to Triton).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float d_exp(float v) { return expf(v); }
__device__ __forceinline__ double d_exp(double v) { return exp(v); }
__device__ __forceinline__ float d_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double d_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float d_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double d_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float d_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double d_tanh(double v) { return tanh(v); }

template <int A, typename T>
__device__ __forceinline__ T act_fwd(T v, T alpha) {
  if constexpr (A == 1) {
    return v;
  } else if constexpr (A == 2) {
    return v > T(0) ? v : T(0);
  } else if constexpr (A == 3) {
    return v > T(0) ? v : v * alpha;
  } else if constexpr (A == 4) {
    return d_tanh(v);
  } else if constexpr (A == 5) {
    return T(1) / (T(1) + d_exp(-v));
  } else if constexpr (A == 6) {
    return v >= T(0) ? v : d_expm1(v);
  } else if constexpr (A == 7) {
    return v >= T(0) ? T(kSeluScale) * v : T(kSeluScale * kSeluAlpha) * d_expm1(v);
  } else if constexpr (A == 8) {
    return (v > T(0) ? v : T(0)) + d_log1p(d_exp(-fabs(v)));
  } else {
    return v / (T(1) + d_exp(-v));
  }
}

// First (G=1) or second (G=2) derivative at x+b, from xr = x + b (xsrc) or yy = y / gain.
template <int A, typename T>
__device__ __forceinline__ T act_deriv(int G, bool xsrc, T xr, T yy, T alpha) {
  if constexpr (A == 1) {
    return G == 1 ? T(1) : T(0);
  } else if constexpr (A == 2 || A == 3) {
    const bool pos = xsrc ? (xr > T(0)) : (yy > T(0));
    if (G == 2) return T(0);
    return pos ? T(1) : (A == 2 ? T(0) : alpha);
  } else if constexpr (A == 4) {
    const T d = T(1) - yy * yy;
    return G == 1 ? d : d * (T(-2) * yy);
  } else if constexpr (A == 5) {
    const T d = yy * (T(1) - yy);
    return G == 1 ? d : d * (T(1) - T(2) * yy);
  } else if constexpr (A == 6) {
    return yy >= T(0) ? T(G == 1 ? 1 : 0) : yy + T(1);
  } else if constexpr (A == 7) {
    return yy >= T(0) ? T(G == 1 ? kSeluScale : 0) : yy + T(kSeluScale * kSeluAlpha);
  } else if constexpr (A == 8) {
    const T s = -d_expm1(-yy);  // 1 - exp(-y) = sigmoid(x)
    return G == 1 ? s : (T(1) - s) * s;
  } else {
    const T xs = xr > T(40) ? T(40) : xr;
    const T c = d_exp(xs);
    const T d = c + T(1);
    if (G == 1) return xr > T(40) ? T(1) : c * (xs + d) / (d * d);
    return xr > T(40) ? T(0) : c * (xs * (T(2) - d) + T(2) * d) / (d * d * d);
  }
}

struct Params {
  const void* g;  // x for G=0, the incoming gradient otherwise
  const void* x;
  const void* b;
  const void* y;
  const void* dy;
  void* out;
  void* part;
  double alpha, gain, inv_gain, clamp;
  int G;
  bool xsrc, read_y, has_b, use_clamp;
  uint32_t n, C, inner;
};

// One element: G=0 -> output value; G>=1 -> gradient.
template <int A, typename T>
__device__ __forceinline__ T compute(const Params& p, T gv, T bias, T xv, T yv, T dyv) {
  const T alpha = T(p.alpha), gain = T(p.gain), clamp = T(p.clamp);
  if (p.G == 0) {
    T r = act_fwd<A, T>(gv + bias, alpha) * gain;
    if (p.use_clamp) r = r > clamp ? clamp : (r < -clamp ? -clamp : r);
    return r;
  }
  const T xr = xv + bias;
  T d = act_deriv<A, T>(p.G, p.xsrc, xr, yv * T(p.inv_gain), alpha) * gain * gv;
  if (p.G == 2) d *= dyv;
  if (p.use_clamp) {
    const T v = p.xsrc ? act_fwd<A, T>(xr, alpha) * gain : yv;
    d = (v > -clamp && v < clamp) ? d : T(0);
  }
  return d;
}

template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Vec {
  scalar_t v[VEC];
};

template <typename scalar_t, int VEC>
__device__ __forceinline__ Vec<scalar_t, VEC> load_vec(const void* ptr, uint32_t i0) {
  return *reinterpret_cast<const Vec<scalar_t, VEC>*>(static_cast<const scalar_t*>(ptr) + i0);
}

// Loads VEC elements at i0 (a multiple of VEC), computes, stores; returns their sum (for db).
template <int A, typename scalar_t, int VEC>
__device__ __forceinline__ typename Acc<scalar_t>::type process(const Params& p, uint32_t i0, uint32_t c,
                                                                 uint32_t pos, bool track_c) {
  using T = typename Acc<scalar_t>::type;
  const scalar_t* bp = static_cast<const scalar_t*>(p.b);
  const Vec<scalar_t, VEC> gv = load_vec<scalar_t, VEC>(p.g, i0);
  Vec<scalar_t, VEC> xv, yv, dyv, ov;
  const bool need_x = p.G > 0 && p.xsrc;
  if (need_x) xv = load_vec<scalar_t, VEC>(p.x, i0);
  if (p.G > 0 && p.read_y) yv = load_vec<scalar_t, VEC>(p.y, i0);
  if (p.G == 2) dyv = load_vec<scalar_t, VEC>(p.dy, i0);
  T sum = T(0);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    const T bias = p.has_b ? T(bp[c]) : T(0);
    const T xk = need_x ? T(xv.v[k]) : T(0);
    const T yk = (p.G > 0 && p.read_y) ? T(yv.v[k]) : T(0);
    const T dk = p.G == 2 ? T(dyv.v[k]) : T(0);
    const T r = compute<A, T>(p, T(gv.v[k]), bias, xk, yk, dk);
    ov.v[k] = scalar_t(r);
    sum += r;
    if (track_c && ++pos == p.inner) {
      pos = 0;
      c = (c + 1 == p.C) ? 0 : c + 1;
    }
  }
  *reinterpret_cast<Vec<scalar_t, VEC>*>(static_cast<scalar_t*>(p.out) + i0) = ov;
  return sum;
}

template <int A, typename scalar_t, int VEC>
__global__ void __launch_bounds__(256) flat_kernel(Params p) {
  const uint32_t units = p.n / VEC;
  const bool track_c = p.has_b && p.C > 1;
  for (uint32_t u = blockIdx.x * blockDim.x + threadIdx.x; u < units; u += gridDim.x * blockDim.x) {
    const uint32_t i0 = u * VEC;
    uint32_t c = 0, pos = 0;
    if (track_c) {
      const uint32_t q = i0 / p.inner;
      pos = i0 - q * p.inner;
      c = q % p.C;
    }
    process<A, scalar_t, VEC>(p, i0, c, pos, track_c);
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// inner > 1. grid (C, split), 256 threads. Rows o = s, s + split, ...; VEC divides inner.
template <int A, typename scalar_t, int VEC>
__global__ void __launch_bounds__(256) rows_db_kernel(Params p, uint32_t O) {
  using T = typename Acc<scalar_t>::type;
  const uint32_t c = blockIdx.x, s = blockIdx.y, split = gridDim.y;
  const uint32_t upr = p.inner / VEC;  // vector units per row
  const uint32_t nrows = O > s ? (O - s + split - 1) / split : 0;
  const uint32_t total = nrows * upr;
  T acc = T(0);
  for (uint32_t j = threadIdx.x; j < total; j += blockDim.x) {
    const uint32_t r = j / upr, u = j - r * upr;
    const uint32_t o = s + r * split;
    const uint32_t i0 = (o * p.C + c) * p.inner + u * VEC;
    acc += process<A, scalar_t, VEC>(p, i0, c, 0, false);
  }
  __shared__ T red[8];
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    T v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : T(0);
    v = warp_sum(v);
    if (threadIdx.x == 0) static_cast<T*>(p.part)[s * p.C + c] = v;
  }
}

// inner == 1: [M, C] row-major. block (32, 8), grid (ceil(C/32), split).
template <int A, typename scalar_t>
__global__ void __launch_bounds__(256) cl_db_kernel(Params p, uint32_t M) {
  using T = typename Acc<scalar_t>::type;
  const uint32_t c = blockIdx.x * 32 + threadIdx.x;
  T acc = T(0);
  if (c < p.C) {
    for (uint32_t m = blockIdx.y * 8 + threadIdx.y; m < M; m += gridDim.y * 8)
      acc += process<A, scalar_t, 1>(p, m * p.C + c, c, 0, false);
  }
  __shared__ T red[8][33];
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < p.C) {
    T v = T(0);
#pragma unroll
    for (int k = 0; k < 8; ++k) v += red[k][threadIdx.x];
    static_cast<T*>(p.part)[blockIdx.y * p.C + c] = v;
  }
}

#define ILSGAN_ACT_SWITCH(act, ...)                         \
  switch (act) {                                            \
    case 1: { constexpr int A = 1; __VA_ARGS__; } break;    \
    case 2: { constexpr int A = 2; __VA_ARGS__; } break;    \
    case 3: { constexpr int A = 3; __VA_ARGS__; } break;    \
    case 4: { constexpr int A = 4; __VA_ARGS__; } break;    \
    case 5: { constexpr int A = 5; __VA_ARGS__; } break;    \
    case 6: { constexpr int A = 6; __VA_ARGS__; } break;    \
    case 7: { constexpr int A = 7; __VA_ARGS__; } break;    \
    case 8: { constexpr int A = 8; __VA_ARGS__; } break;    \
    case 9: { constexpr int A = 9; __VA_ARGS__; } break;    \
    default: TORCH_CHECK(false, "bias_act: bad act index"); \
  }

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

bool aligned16(const void* ptr) { return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) % 16) == 0; }

bool all_aligned(const Params& p) {
  return aligned16(p.g) && aligned16(p.x) && aligned16(p.y) && aligned16(p.dy) && aligned16(p.out);
}

template <int A, typename scalar_t>
void launch_flat(const Params& p) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  const bool vec = all_aligned(p) && p.n % VEC == 0;
  const uint32_t units = vec ? p.n / VEC : p.n;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((units + 255) / 256, int64_t(sm_count()) * 16));
  auto stream = at::cuda::getCurrentCUDAStream();
  if (vec)
    flat_kernel<A, scalar_t, VEC><<<blocks, 256, 0, stream>>>(p);
  else
    flat_kernel<A, scalar_t, 1><<<blocks, 256, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int A, typename scalar_t>
void launch_db(const Params& p_, at::Tensor& part_holder, const at::TensorOptions& popt) {
  Params p = p_;
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t target = int64_t(sm_count()) * 8;
  if (p.inner > 1 || p.C == 1) {
    const uint32_t C = p.C > 1 ? p.C : 1;
    if (p.C == 1) p.inner = p.n;
    const uint32_t O = p.n / (C * p.inner);
    const int64_t split = std::max<int64_t>(1, std::min<int64_t>(O, (target + C - 1) / C));
    part_holder = at::empty({split, int64_t(C)}, popt);
    p.part = part_holder.data_ptr();
    constexpr int VEC = 16 / sizeof(scalar_t);
    dim3 grid(C, split);
    if (all_aligned(p) && p.inner % VEC == 0)
      rows_db_kernel<A, scalar_t, VEC><<<grid, 256, 0, stream>>>(p, O);
    else
      rows_db_kernel<A, scalar_t, 1><<<grid, 256, 0, stream>>>(p, O);
  } else {
    const uint32_t M = p.n / p.C;
    const int64_t cb = (p.C + 31) / 32;
    const int64_t split = std::max<int64_t>(1, std::min<int64_t>((M + 7) / 8, (target + cb - 1) / cb));
    part_holder = at::empty({split, int64_t(p.C)}, popt);
    p.part = part_holder.data_ptr();
    cl_db_kernel<A, scalar_t><<<dim3(cb, split), dim3(32, 8), 0, stream>>>(p, M);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_like(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == ref.device(), "bias_act (cuda): ", name, " must be on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "bias_act (cuda): ", name, " must have dtype ", ref.scalar_type());
  TORCH_CHECK(t.sizes() == ref.sizes(), "bias_act (cuda): ", name, " must have shape ", ref.sizes());
  TORCH_CHECK(t.strides() == ref.strides() || t.numel() <= 1, "bias_act (cuda): ", name,
              " must have the strides of the other inputs");
}

void fill_layout(Params& p, const at::Tensor& t, int64_t dim, bool channels) {
  TORCH_CHECK(t.is_cuda(), "bias_act (cuda): tensors must be CUDA tensors");
  TORCH_CHECK(t.is_non_overlapping_and_dense(), "bias_act (cuda): tensors must be dense (contiguous or channels_last)");
  TORCH_CHECK(t.numel() < (int64_t(1) << 31), "bias_act (cuda): tensors must have fewer than 2^31 elements");
  TORCH_CHECK(t.dim() == 0 || (dim >= 0 && dim < t.dim()), "bias_act (cuda): dim out of range");
  p.n = uint32_t(t.numel());
  p.C = 1;
  p.inner = p.n > 0 ? p.n : 1;
  if (channels && t.dim() > 0 && t.size(dim) > 1) {
    p.C = uint32_t(t.size(dim));
    p.inner = uint32_t(std::max<int64_t>(1, t.stride(dim)));
  }
}

void check_bias(const c10::optional<at::Tensor>& b, const at::Tensor& x, int64_t dim) {
  if (b.has_value() && b->defined()) {
    TORCH_CHECK(b->is_cuda() && b->device() == x.device(), "bias_act (cuda): b must be on ", x.device());
    TORCH_CHECK(b->dim() == 1 && b->is_contiguous(), "bias_act (cuda): b must be contiguous 1-D");
    TORCH_CHECK(x.dim() > 0 && b->size(0) == x.size(dim), "bias_act (cuda): b must have x.shape[dim] elements");
    TORCH_CHECK(b->scalar_type() == x.scalar_type(), "bias_act (cuda): b must have the dtype of x");
  }
}

at::Tensor bias_act_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, int64_t act,
                        double alpha, double gain, double clamp) {
  TORCH_CHECK(act >= 1 && act <= 9, "bias_act (cuda): act index must be in 1..9");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "bias_act (cuda): x must be floating point");
  const bool has_b = b.has_value() && b->defined();
  check_bias(b, x, dim);
  Params p{};
  fill_layout(p, x, dim, has_b);
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  p.g = x.data_ptr();
  p.b = has_b ? b->data_ptr() : nullptr;
  p.out = y.data_ptr();
  p.alpha = alpha;
  p.gain = gain;
  p.inv_gain = gain != 0 ? 1.0 / gain : 0.0;
  p.clamp = clamp;
  p.use_clamp = clamp >= 0;
  p.G = 0;
  p.has_b = has_b;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_fwd_cuda", [&] {
    ILSGAN_ACT_SWITCH(act, launch_flat<A, scalar_t>(p));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_act_grad(const at::Tensor& g, const c10::optional<at::Tensor>& x_,
                                                 const c10::optional<at::Tensor>& b,
                                                 const c10::optional<at::Tensor>& y_,
                                                 const c10::optional<at::Tensor>& dy_, int64_t order, int64_t dim,
                                                 int64_t act, double alpha, double gain, double clamp, bool need_db) {
  TORCH_CHECK(act >= 1 && act <= 9, "bias_act (cuda): act index must be in 1..9");
  TORCH_CHECK(order == 1 || order == 2, "bias_act_grad (cuda): order must be 1 or 2");
  TORCH_CHECK(at::isFloatingType(g.scalar_type()), "bias_act (cuda): g must be floating point");
  const at::Tensor x = x_.has_value() ? *x_ : at::Tensor();
  const at::Tensor y = y_.has_value() ? *y_ : at::Tensor();
  const at::Tensor dy = dy_.has_value() ? *dy_ : at::Tensor();
  if (x.defined()) check_like(x, g, "x");
  if (y.defined()) check_like(y, g, "y");
  if (dy.defined()) check_like(dy, g, "dy");
  check_bias(b, g, dim);
  const bool xsrc = act == 9 || (act <= 3 && !y.defined() && x.defined());
  TORCH_CHECK(!xsrc || x.defined(), "bias_act_grad (cuda): this activation needs x");
  TORCH_CHECK(xsrc || y.defined() || (act == 1 && clamp < 0), "bias_act_grad (cuda): this activation needs y");
  TORCH_CHECK(order == 1 || (dy.defined() && act >= 4), "bias_act_grad (cuda): order 2 needs dy and a smooth act");

  Params p{};
  fill_layout(p, g, dim, need_db || (b.has_value() && b->defined()));
  c10::cuda::CUDAGuard guard(g.device());
  at::Tensor out = at::empty_like(g);
  at::Tensor db = at::zeros({need_db ? g.size(dim) : 0}, g.options());
  if (g.numel() == 0) return {out, db};
  p.g = g.data_ptr();
  p.x = xsrc ? x.data_ptr() : nullptr;
  p.has_b = xsrc && b.has_value() && b->defined();
  p.b = p.has_b ? b->data_ptr() : nullptr;
  p.read_y = !xsrc && (act != 1 || clamp >= 0);
  p.y = p.read_y ? y.data_ptr() : nullptr;
  p.dy = order == 2 ? dy.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.alpha = alpha;
  p.gain = gain;
  p.inv_gain = gain != 0 ? 1.0 / gain : 0.0;
  p.clamp = clamp;
  p.use_clamp = clamp >= 0;
  p.G = int(order);
  p.xsrc = xsrc;
  // Without need_db the channel is needed only to add b to x (xsrc).
  if (!need_db && !p.has_b) {
    p.C = 1;
    p.inner = p.n;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "bias_act_grad_cuda", [&] {
    if (!need_db) {
      ILSGAN_ACT_SWITCH(act, launch_flat<A, scalar_t>(p));
    } else {
      at::Tensor part;
      const auto popt = g.options().dtype(g.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
      ILSGAN_ACT_SWITCH(act, launch_db<A, scalar_t>(p, part, popt));
      db.copy_(part.sum(0));
    }
  });
  return {out, db};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cuda, m) {
  m.def("bias_act_fwd(Tensor x, Tensor? b, int dim, int act, float alpha, float gain, float clamp) -> Tensor",
        &bias_act_fwd);
  m.def(
      "bias_act_grad(Tensor g, Tensor? x, Tensor? b, Tensor? y, Tensor? dy, int order, int dim, int act, "
      "float alpha, float gain, float clamp, bool need_db) -> (Tensor, Tensor)",
      &bias_act_grad);
}
