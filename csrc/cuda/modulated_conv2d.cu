// Modulated convolution (StyleGAN2): the CUDA passes around the shared-weight conv (cuDNN via torch).
// Same ops and semantics as csrc/cpu/modulated_conv2d.cpp (see there), registered in ilsgan_cuda:
//   modconv_epilogue_fwd: y = clamp(act(z*d + noise + b) * gain)               (grid-stride, flat)
//   modconv_epilogue_bwd: dz, and in the same pass sum_hw du*z, sum_hw du per (n,o) and sum_o du per
//                         pixel. A block owns one sample and a tile of pixels and walks all channels;
//                         per-(n,o) sums are reduced in the warp / block and written as per-tile
//                         partials that the host sums (deterministic, no atomics).
//   modconv_scale_bwd:    dx = dxs*s[n,i], ds[n,i] = sum_hw dxs*x, same tiling.
// float16/bfloat16 compute in float32, float32 in float32, float64 in float64.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

namespace {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

constexpr int TX = 32;  // threads along the contiguous dimension (one warp)
constexpr int TY = 8;   // warps per block

template <typename A>
__device__ __forceinline__ A act_f(A u, A alpha, int act) {
  if (act == 1) return u;
  if (act == 2) return u > A(0) ? u : A(0);
  return u > A(0) ? u : u * alpha;
}

template <typename A>
__device__ __forceinline__ A act_d(A u, A alpha, int act) {
  if (act == 1) return A(1);
  if (act == 2) return u > A(0) ? A(1) : A(0);
  return u > A(0) ? A(1) : alpha;
}

template <typename A>
__device__ __forceinline__ A clampv(A v, A c) {
  return v < -c ? -c : (v > c ? c : v);
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

struct EpiParams {
  int64_t N, O, HW, NPB;
  int act;
  double alpha, gain, clamp;
};

// ---------------------------------------------------------------------------------------------
// Forward.

template <typename T, int NMODE, bool CL, typename I>
__global__ void epi_fwd_kernel(const T* __restrict__ z, const typename Acc<T>::type* __restrict__ d,
                               const typename Acc<T>::type* __restrict__ nz,
                               const typename Acc<T>::type* __restrict__ b, T* __restrict__ y, EpiParams prm) {
  // I: index type, uint32_t when every index fits (cheap div/mod), else int64_t.
  using A = typename Acc<T>::type;
  const A alpha = A(prm.alpha), gain = A(prm.gain), cl = A(prm.clamp);
  const I O = (I)prm.O, HW = (I)prm.HW, total = (I)(prm.N * prm.O * prm.HW);
  const I stride = (I)gridDim.x * (I)blockDim.x;
  for (I e = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; e < total; e += stride) {
    I o, p, n;
    if (CL) {
      o = e % O;
      const I t = e / O;
      p = t % HW;
      n = t / HW;
    } else {
      p = e % HW;
      const I t = e / HW;
      o = t % O;
      n = t / O;
    }
    A u = static_cast<A>(z[e]) * d[n * O + o] + b[o];
    if (NMODE == 1) u += nz[n * HW + p];
    if (NMODE == 2) u += nz[e];
    y[e] = static_cast<T>(clampv(act_f(u, alpha, prm.act) * gain, cl));
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, NCHW: block (TX, TY) over (pixels, channels); tile = TX*VP pixels of one sample.

template <typename T, int NMODE, int VP>
__global__ void epi_bwd_nchw_kernel(const T* __restrict__ dy, const T* __restrict__ z,
                                    const typename Acc<T>::type* __restrict__ d,
                                    const typename Acc<T>::type* __restrict__ nz,
                                    const typename Acc<T>::type* __restrict__ b, T* __restrict__ dz,
                                    typename Acc<T>::type* __restrict__ ep, typename Acc<T>::type* __restrict__ sp,
                                    typename Acc<T>::type* __restrict__ dn, EpiParams prm) {
  using A = typename Acc<T>::type;
  __shared__ A dn_sh[TY][TX * VP];
  const A alpha = A(prm.alpha), gain = A(prm.gain), cl = A(prm.clamp);
  const int64_t O = prm.O, HW = prm.HW;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t pb = blockIdx.x, n = blockIdx.y;
  const int64_t p0 = pb * (TX * VP);
  A dnl[VP];
  A nzl[VP];
#pragma unroll
  for (int k = 0; k < VP; ++k) {
    dnl[k] = A(0);
    const int64_t p = p0 + tx + TX * k;
    nzl[k] = (NMODE == 1 && p < HW) ? nz[n * HW + p] : A(0);
  }
  for (int64_t o = ty; o < O; o += TY) {
    const int64_t row = (n * O + o) * HW;
    const A dno = d[n * O + o], bo = b[o];
    A e = A(0), s = A(0);
#pragma unroll
    for (int k = 0; k < VP; ++k) {
      const int64_t p = p0 + tx + TX * k;
      if (p < HW) {
        const A zv = static_cast<A>(z[row + p]);
        A u = zv * dno + bo + nzl[k];
        if (NMODE == 2) u += nz[row + p];
        const A v = act_f(u, alpha, prm.act) * gain;
        const A du = (v >= -cl && v <= cl) ? static_cast<A>(dy[row + p]) * gain * act_d(u, alpha, prm.act) : A(0);
        dz[row + p] = static_cast<T>(du * dno);
        e += du * zv;
        s += du;
        dnl[k] += du;
        if (NMODE == 2) dn[row + p] = du;
      }
    }
    e = warp_sum(e);
    s = warp_sum(s);
    if (tx == 0) {
      const int64_t idx = (n * prm.NPB + pb) * O + o;
      ep[idx] = e;
      sp[idx] = s;
    }
  }
  if (NMODE == 1) {
#pragma unroll
    for (int k = 0; k < VP; ++k) dn_sh[ty][tx + TX * k] = dnl[k];
    __syncthreads();
    if (ty == 0) {
#pragma unroll
      for (int k = 0; k < VP; ++k) {
        const int64_t p = p0 + tx + TX * k;
        A t = A(0);
        for (int r = 0; r < TY; ++r) t += dn_sh[r][tx + TX * k];
        if (p < HW) dn[n * HW + p] = t;
      }
    }
  }
}

// Backward, channels_last: block (TX, TY) over (channels, pixels); tile = TPC pixels of one sample.
constexpr int TPC = 64;

template <typename T, int NMODE>
__global__ void epi_bwd_nhwc_kernel(const T* __restrict__ dy, const T* __restrict__ z,
                                    const typename Acc<T>::type* __restrict__ d,
                                    const typename Acc<T>::type* __restrict__ nz,
                                    const typename Acc<T>::type* __restrict__ b, T* __restrict__ dz,
                                    typename Acc<T>::type* __restrict__ ep, typename Acc<T>::type* __restrict__ sp,
                                    typename Acc<T>::type* __restrict__ dn, EpiParams prm) {
  using A = typename Acc<T>::type;
  __shared__ A dn_sh[TPC];
  __shared__ A e_sh[TY][TX];
  __shared__ A s_sh[TY][TX];
  const A alpha = A(prm.alpha), gain = A(prm.gain), cl = A(prm.clamp);
  const int64_t O = prm.O, HW = prm.HW;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t pb = blockIdx.x, n = blockIdx.y;
  const int64_t p0 = pb * TPC;
  for (int i = ty * TX + tx; i < TPC; i += TX * TY) dn_sh[i] = A(0);
  __syncthreads();
  for (int64_t o0 = 0; o0 < O; o0 += TX) {
    const int64_t o = o0 + tx;
    const bool om = o < O;
    const A dno = om ? d[n * O + o] : A(0), bo = om ? b[o] : A(0);
    A e = A(0), s = A(0);
    for (int pi = ty; pi < TPC; pi += TY) {
      const int64_t p = p0 + pi;
      if (p >= HW) break;  // uniform across the warp (depends on ty only)
      A du = A(0);
      if (om) {
        const int64_t idx = (n * HW + p) * O + o;
        const A zv = static_cast<A>(z[idx]);
        A u = zv * dno + bo;
        if (NMODE == 1) u += nz[n * HW + p];
        if (NMODE == 2) u += nz[idx];
        const A v = act_f(u, alpha, prm.act) * gain;
        du = (v >= -cl && v <= cl) ? static_cast<A>(dy[idx]) * gain * act_d(u, alpha, prm.act) : A(0);
        dz[idx] = static_cast<T>(du * dno);
        e += du * zv;
        s += du;
        if (NMODE == 2) dn[idx] = du;
      }
      if (NMODE == 1) {
        const A t = warp_sum(du);
        if (tx == 0) dn_sh[pi] += t;  // pixel pi is owned by warp ty: no race, fixed order
      }
    }
    e_sh[ty][tx] = e;
    s_sh[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && om) {
      A et = A(0), st = A(0);
      for (int r = 0; r < TY; ++r) {
        et += e_sh[r][tx];
        st += s_sh[r][tx];
      }
      const int64_t idx = (n * prm.NPB + pb) * O + o;
      ep[idx] = et;
      sp[idx] = st;
    }
    __syncthreads();
  }
  if (NMODE == 1) {
    for (int i = ty * TX + tx; i < TPC; i += TX * TY) {
      const int64_t p = p0 + i;
      if (p < HW) dn[n * HW + p] = dn_sh[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Input-scale backward.

template <typename T, int VP>
__global__ void scale_bwd_nchw_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                      const typename Acc<T>::type* __restrict__ s, T* __restrict__ dx,
                                      typename Acc<T>::type* __restrict__ dsp, int64_t C, int64_t HW, int64_t NPB,
                                      bool need_ds) {
  using A = typename Acc<T>::type;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t pb = blockIdx.x, n = blockIdx.y;
  const int64_t p0 = pb * (TX * VP);
  for (int64_t c = ty; c < C; c += TY) {
    const int64_t row = (n * C + c) * HW;
    const A sv = s[n * C + c];
    A acc = A(0);
#pragma unroll
    for (int k = 0; k < VP; ++k) {
      const int64_t p = p0 + tx + TX * k;
      if (p < HW) {
        const A gv = static_cast<A>(g[row + p]);
        dx[row + p] = static_cast<T>(gv * sv);
        if (need_ds) acc += gv * static_cast<A>(x[row + p]);
      }
    }
    if (need_ds) {
      acc = warp_sum(acc);
      if (tx == 0) dsp[(n * NPB + pb) * C + c] = acc;
    }
  }
}

template <typename T>
__global__ void scale_bwd_nhwc_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                      const typename Acc<T>::type* __restrict__ s, T* __restrict__ dx,
                                      typename Acc<T>::type* __restrict__ dsp, int64_t C, int64_t HW, int64_t NPB,
                                      bool need_ds) {
  using A = typename Acc<T>::type;
  __shared__ A a_sh[TY][TX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t pb = blockIdx.x, n = blockIdx.y;
  const int64_t p0 = pb * TPC;
  for (int64_t c0 = 0; c0 < C; c0 += TX) {
    const int64_t c = c0 + tx;
    const bool cm = c < C;
    const A sv = cm ? s[n * C + c] : A(0);
    A acc = A(0);
    if (cm) {
      for (int pi = ty; pi < TPC; pi += TY) {
        const int64_t p = p0 + pi;
        if (p >= HW) break;
        const int64_t idx = (n * HW + p) * C + c;
        const A gv = static_cast<A>(g[idx]);
        dx[idx] = static_cast<T>(gv * sv);
        if (need_ds) acc += gv * static_cast<A>(x[idx]);
      }
    }
    if (need_ds) {
      a_sh[ty][tx] = acc;
      __syncthreads();
      if (ty == 0 && cm) {
        A t = A(0);
        for (int r = 0; r < TY; ++r) t += a_sh[r][tx];
        dsp[(n * NPB + pb) * C + c] = t;
      }
      __syncthreads();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

bool is_cl(const at::Tensor& t, const char* name) {
  if (t.is_contiguous()) return false;
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "modulated_conv2d: ", name,
              " must be NCHW- or channels_last-contiguous");
  return true;
}

at::ScalarType acc_type(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

struct Prepared {
  at::Tensor d, b, noise;
  int64_t N, O, HW;
  bool cl;
};

Prepared prepare(const at::Tensor& z, const c10::optional<at::Tensor>& d_opt, const c10::optional<at::Tensor>& n_opt,
                 const c10::optional<at::Tensor>& b_opt, int64_t noise_mode, int64_t act) {
  TORCH_CHECK(z.is_cuda() && z.dim() == 4, "modulated_conv2d: z must be a 4-D CUDA tensor");
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble || z.scalar_type() == at::kHalf ||
                  z.scalar_type() == at::kBFloat16,
              "modulated_conv2d: z must be float16, bfloat16, float32 or float64");
  TORCH_CHECK(act == 1 || act == 2 || act == 3, "modulated_conv2d: act must be 1 (linear), 2 (relu) or 3 (lrelu)");
  TORCH_CHECK(noise_mode >= 0 && noise_mode <= 2, "modulated_conv2d: noise_mode must be 0, 1 or 2");
  Prepared r;
  r.N = z.size(0);
  r.O = z.size(1);
  r.HW = z.size(2) * z.size(3);
  r.cl = is_cl(z, "z");
  const auto opts = z.options().dtype(acc_type(z));
  r.d = (d_opt.has_value() && d_opt->defined()) ? *d_opt : at::ones({r.N, r.O}, opts);
  r.b = (b_opt.has_value() && b_opt->defined()) ? *b_opt : at::zeros({r.O}, opts);
  TORCH_CHECK(r.d.scalar_type() == acc_type(z) && r.d.is_contiguous() && r.d.dim() == 2 && r.d.size(0) == r.N &&
                  r.d.size(1) == r.O && r.d.device() == z.device(),
              "modulated_conv2d: d must be a contiguous [N, O] tensor of the compute dtype on z's device");
  TORCH_CHECK(r.b.scalar_type() == acc_type(z) && r.b.is_contiguous() && r.b.dim() == 1 && r.b.size(0) == r.O &&
                  r.b.device() == z.device(),
              "modulated_conv2d: b must be a contiguous [O] tensor of the compute dtype on z's device");
  if (noise_mode != 0) {
    TORCH_CHECK(n_opt.has_value() && n_opt->defined(), "modulated_conv2d: noise_mode != 0 needs noise");
    r.noise = *n_opt;
    TORCH_CHECK(r.noise.scalar_type() == acc_type(z) && r.noise.device() == z.device(),
                "modulated_conv2d: noise must have the compute dtype and z's device");
    if (noise_mode == 1) {
      TORCH_CHECK(r.noise.is_contiguous() && r.noise.numel() == r.N * r.HW,
                  "modulated_conv2d: noise (mode 1) must be a contiguous [N, H*W] tensor");
    } else {
      TORCH_CHECK(r.noise.sizes() == z.sizes() && r.noise.strides() == z.strides(),
                  "modulated_conv2d: noise (mode 2) must have z's shape and layout");
    }
  }
  return r;
}

at::Tensor modconv_epilogue_fwd(const at::Tensor& z, const c10::optional<at::Tensor>& d_opt,
                                const c10::optional<at::Tensor>& noise_opt, const c10::optional<at::Tensor>& b_opt,
                                int64_t noise_mode, int64_t act, double alpha, double gain, double clamp) {
  const c10::cuda::CUDAGuard guard(z.device());
  Prepared r = prepare(z, d_opt, noise_opt, b_opt, noise_mode, act);
  at::Tensor y = at::empty_like(z);
  const int64_t total = z.numel();
  if (total == 0) return y;
  EpiParams prm{r.N, r.O, r.HW, 0, (int)act, alpha, gain, clamp < 0 ? std::numeric_limits<double>::infinity() : clamp};
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535LL * 8);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "modconv_epilogue_fwd", [&] {
    using A = typename Acc<scalar_t>::type;
    const A* nzp = r.noise.defined() ? r.noise.data_ptr<A>() : nullptr;
    auto launch = [&](auto mode_tag, auto cl_tag) {
      constexpr int NM = decltype(mode_tag)::value;
      constexpr bool CL = decltype(cl_tag)::value;
      if (total + (int64_t)threads * blocks < (int64_t)UINT32_MAX) {
        epi_fwd_kernel<scalar_t, NM, CL, uint32_t><<<blocks, threads, 0, stream>>>(
            z.data_ptr<scalar_t>(), r.d.data_ptr<A>(), nzp, r.b.data_ptr<A>(), y.data_ptr<scalar_t>(), prm);
      } else {
        epi_fwd_kernel<scalar_t, NM, CL, int64_t><<<blocks, threads, 0, stream>>>(
            z.data_ptr<scalar_t>(), r.d.data_ptr<A>(), nzp, r.b.data_ptr<A>(), y.data_ptr<scalar_t>(), prm);
      }
    };
    auto by_layout = [&](auto mode_tag) {
      if (r.cl) launch(mode_tag, std::true_type());
      else launch(mode_tag, std::false_type());
    };
    if (noise_mode == 0) by_layout(std::integral_constant<int, 0>());
    else if (noise_mode == 1) by_layout(std::integral_constant<int, 1>());
    else by_layout(std::integral_constant<int, 2>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> modconv_epilogue_bwd(
    const at::Tensor& dy, const at::Tensor& z, const c10::optional<at::Tensor>& d_opt,
    const c10::optional<at::Tensor>& noise_opt, const c10::optional<at::Tensor>& b_opt, int64_t noise_mode,
    int64_t act, double alpha, double gain, double clamp, bool need_dd, bool need_db, bool need_dnoise) {
  const c10::cuda::CUDAGuard guard(z.device());
  Prepared r = prepare(z, d_opt, noise_opt, b_opt, noise_mode, act);
  TORCH_CHECK(dy.scalar_type() == z.scalar_type() && dy.sizes() == z.sizes() && dy.strides() == z.strides() &&
                  dy.device() == z.device(),
              "modulated_conv2d: dy must have z's dtype, shape, layout and device");
  const auto aopts = z.options().dtype(acc_type(z));
  at::Tensor dz = at::empty_like(z);
  at::Tensor dn;
  if (noise_mode == 1) dn = at::empty({r.N, r.HW}, aopts);
  else if (noise_mode == 2) dn = at::empty_like(z, aopts);
  else dn = at::empty({0}, aopts);
  at::Tensor dd, dbp;
  if (z.numel() == 0) {
    dd = at::zeros({r.N, r.O}, aopts);
    dbp = at::zeros({r.N, r.O}, aopts);
    dn.zero_();
  } else {
    const int vp = r.HW > TX ? 4 : 1;
    const int64_t tile = r.cl ? TPC : TX * vp;
    const int64_t npb = (r.HW + tile - 1) / tile;
    TORCH_CHECK(r.N <= 65535, "modulated_conv2d: batch size must be <= 65535 on the cuda backend");
    at::Tensor ep = at::empty({r.N, npb, r.O}, aopts);
    at::Tensor sp = at::empty({r.N, npb, r.O}, aopts);
    EpiParams prm{r.N, r.O, r.HW, npb, (int)act, alpha, gain,
                  clamp < 0 ? std::numeric_limits<double>::infinity() : clamp};
    const dim3 block(TX, TY);
    const dim3 grid((unsigned)npb, (unsigned)r.N);
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "modconv_epilogue_bwd", [&] {
      using A = typename Acc<scalar_t>::type;
      const A* nzp = r.noise.defined() ? r.noise.data_ptr<A>() : nullptr;
      A* dnp = noise_mode != 0 ? dn.data_ptr<A>() : nullptr;
      auto launch = [&](auto mode_tag) {
        constexpr int NM = decltype(mode_tag)::value;
        if (r.cl) {
          epi_bwd_nhwc_kernel<scalar_t, NM><<<grid, block, 0, stream>>>(
              dy.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), r.d.data_ptr<A>(), nzp, r.b.data_ptr<A>(),
              dz.data_ptr<scalar_t>(), ep.data_ptr<A>(), sp.data_ptr<A>(), dnp, prm);
        } else if (vp == 4) {
          epi_bwd_nchw_kernel<scalar_t, NM, 4><<<grid, block, 0, stream>>>(
              dy.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), r.d.data_ptr<A>(), nzp, r.b.data_ptr<A>(),
              dz.data_ptr<scalar_t>(), ep.data_ptr<A>(), sp.data_ptr<A>(), dnp, prm);
        } else {
          epi_bwd_nchw_kernel<scalar_t, NM, 1><<<grid, block, 0, stream>>>(
              dy.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), r.d.data_ptr<A>(), nzp, r.b.data_ptr<A>(),
              dz.data_ptr<scalar_t>(), ep.data_ptr<A>(), sp.data_ptr<A>(), dnp, prm);
        }
      };
      if (noise_mode == 0) launch(std::integral_constant<int, 0>());
      else if (noise_mode == 1) launch(std::integral_constant<int, 1>());
      else launch(std::integral_constant<int, 2>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    dd = ep.sum(1);
    dbp = sp.sum(1);
  }
  at::Tensor db = need_db ? dbp.sum(0) : at::empty({0}, aopts);
  if (!need_dd) dd = at::empty({0}, aopts);
  if (!need_dnoise) dn = at::empty({0}, aopts);
  return std::make_tuple(dz, dd, db, dn);
}

std::tuple<at::Tensor, at::Tensor> modconv_scale_bwd(const at::Tensor& dxs, const at::Tensor& x, const at::Tensor& s,
                                                     bool need_ds) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4, "modulated_conv2d: x must be a 4-D CUDA tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kHalf ||
                  x.scalar_type() == at::kBFloat16,
              "modulated_conv2d: x must be float16, bfloat16, float32 or float64");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const auto aopts = x.options().dtype(acc_type(x));
  const bool cl = is_cl(x, "x");
  TORCH_CHECK(dxs.scalar_type() == x.scalar_type() && dxs.sizes() == x.sizes() && dxs.strides() == x.strides() &&
                  dxs.device() == x.device(),
              "modulated_conv2d: dxs must have x's dtype, shape, layout and device");
  TORCH_CHECK(s.scalar_type() == acc_type(x) && s.is_contiguous() && s.dim() == 2 && s.size(0) == N &&
                  s.size(1) == C && s.device() == x.device(),
              "modulated_conv2d: s must be a contiguous [N, C] tensor of the compute dtype on x's device");
  at::Tensor dx = at::empty_like(x);
  if (x.numel() == 0) return std::make_tuple(dx, need_ds ? at::zeros({N, C}, aopts) : at::empty({0}, aopts));
  TORCH_CHECK(N <= 65535, "modulated_conv2d: batch size must be <= 65535 on the cuda backend");
  const int vp = HW > TX ? 4 : 1;
  const int64_t tile = cl ? TPC : TX * vp;
  const int64_t npb = (HW + tile - 1) / tile;
  at::Tensor dsp = need_ds ? at::empty({N, npb, C}, aopts) : at::empty({0}, aopts);
  const dim3 block(TX, TY);
  const dim3 grid((unsigned)npb, (unsigned)N);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modconv_scale_bwd", [&] {
    using A = typename Acc<scalar_t>::type;
    A* dspp = need_ds ? dsp.data_ptr<A>() : nullptr;
    if (cl) {
      scale_bwd_nhwc_kernel<scalar_t><<<grid, block, 0, stream>>>(dxs.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                                 s.data_ptr<A>(), dx.data_ptr<scalar_t>(), dspp, C, HW,
                                                                 npb, need_ds);
    } else if (vp == 4) {
      scale_bwd_nchw_kernel<scalar_t, 4><<<grid, block, 0, stream>>>(dxs.data_ptr<scalar_t>(),
                                                                    x.data_ptr<scalar_t>(), s.data_ptr<A>(),
                                                                    dx.data_ptr<scalar_t>(), dspp, C, HW, npb, need_ds);
    } else {
      scale_bwd_nchw_kernel<scalar_t, 1><<<grid, block, 0, stream>>>(dxs.data_ptr<scalar_t>(),
                                                                    x.data_ptr<scalar_t>(), s.data_ptr<A>(),
                                                                    dx.data_ptr<scalar_t>(), dspp, C, HW, npb, need_ds);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor ds = need_ds ? dsp.sum(1) : at::empty({0}, aopts);
  return std::make_tuple(dx, ds);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cuda, m) {
  m.def("modconv_epilogue_fwd(Tensor z, Tensor? d, Tensor? noise, Tensor? b, int noise_mode, int act, float alpha, "
        "float gain, float clamp) -> Tensor",
        &modconv_epilogue_fwd);
  m.def("modconv_epilogue_bwd(Tensor dy, Tensor z, Tensor? d, Tensor? noise, Tensor? b, int noise_mode, int act, "
        "float alpha, float gain, float clamp, bool need_dd, bool need_db, bool need_dnoise) -> "
        "(Tensor, Tensor, Tensor, Tensor)",
        &modconv_epilogue_bwd);
  m.def("modconv_scale_bwd(Tensor dxs, Tensor x, Tensor s, bool need_ds) -> (Tensor, Tensor)", &modconv_scale_bwd);
}
