// Modulated convolution (StyleGAN2) — the elementwise/reduction passes around torch's shared conv.
//
// modconv_epilogue_fwd(z, d, noise, b, noise_mode, act, alpha, gain, clamp) -> y
//   u = z*d[n,o] + noise + b[o];  y = clamp(act(u) * gain, -clamp, clamp)
// modconv_epilogue_bwd(dy, z, d, noise, b, noise_mode, act, alpha, gain, clamp, need_dd, need_db, need_dnoise)
//   -> (dz, dd, db, dnoise): du = dy * gain * act'(u) * [|act(u)*gain| <= clamp], dz = du*d,
//      dd[n,o] = sum_hw du*z, db[o] = sum_{n,hw} du, dnoise = sum_o du (mode 1) or du (mode 2),
//      all in ONE pass over (dy, z).
// modconv_scale_bwd(dxs, x, s, need_ds) -> (dx, ds): dx = dxs*s[n,i], ds[n,i] = sum_hw dxs*x, one pass.
// modconv_1x1_fwd(x, w) -> z: z[n,o,p] = sum_i w[n,o,i] x[n,i,p], per-sample weights w [N,O,I] with few
//   outputs (O <= 8: ToRGB), one streaming pass over x.
// modconv_1x1_bwd(dz, x, w, need_dx, need_dw) -> (dx, dw): dx[n,i,p] = sum_o w[n,o,i] dz[n,o,p] and
//   dw[n,o,i] = sum_p dz[n,o,p] x[n,i,p] in ONE pass over x (the layer is memory-bound: x is the
//   only large tensor; a BLAS formulation reads it twice and runs at small-O GEMM efficiency).
//
// The 1x1 kernels take NCHW-contiguous x/z/dz (float16/bfloat16/float32/float64) and w in the compute dtype.
// z/y/dy/dz (and noise in mode 2) are NCHW- or channels_last-contiguous (same layout); z is
// float16/bfloat16/float32/float64, computed in float32 (float64 for float64). d [N,O], b [O], noise mode 1
// [N,H*W] and the reductions are in the compute dtype. act: 1 linear, 2 relu, 3 lrelu (alpha >= 0).
// clamp < 0 disables the clamp. Parallel over samples (the reductions stay deterministic: each
// sample's sums are computed by one thread in a fixed order; db sums the per-sample partials).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common.h"

namespace {

using ilsgan::Acc;
using ilsgan::acc_scalar_type;
using ilsgan::check_float_dtype;

enum Layout { NCHW = 0, NHWC = 1 };

Layout layout_of(const at::Tensor& t, const char* name) {
  if (t.is_contiguous()) return NCHW;
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "modulated_conv2d: ", name,
              " must be NCHW- or channels_last-contiguous");
  return NHWC;
}

template <int ACT, typename A>
inline A act_f(A u, A alpha) {
  if (ACT == 2) return u > A(0) ? u : A(0);
  if (ACT == 3) return u > A(0) ? u : u * alpha;
  return u;
}

template <int ACT, typename A>
inline A act_d(A u, A alpha) {
  if (ACT == 2) return u > A(0) ? A(1) : A(0);
  if (ACT == 3) return u > A(0) ? A(1) : alpha;
  return A(1);
}

struct Dims {
  int64_t N, O, HW;
};

void check_common(const at::Tensor& z, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
                  int64_t noise_mode, int64_t act, at::ScalarType acc) {
  TORCH_CHECK(z.dim() == 4, "modulated_conv2d: z must be 4-D");
  TORCH_CHECK(z.device().is_cpu(), "modulated_conv2d: cpu kernels need CPU tensors");
  check_float_dtype(z, "modulated_conv2d", "z");
  const int64_t N = z.size(0), O = z.size(1), HW = z.size(2) * z.size(3);
  TORCH_CHECK(d.scalar_type() == acc && d.is_contiguous() && d.dim() == 2 && d.size(0) == N && d.size(1) == O,
              "modulated_conv2d: d must be a contiguous [N, O] tensor of the compute dtype");
  TORCH_CHECK(b.scalar_type() == acc && b.is_contiguous() && b.dim() == 1 && b.size(0) == O,
              "modulated_conv2d: b must be a contiguous [O] tensor of the compute dtype");
  TORCH_CHECK(act == 1 || act == 2 || act == 3, "modulated_conv2d: act must be 1 (linear), 2 (relu) or 3 (lrelu)");
  TORCH_CHECK(noise_mode >= 0 && noise_mode <= 2, "modulated_conv2d: noise_mode must be 0, 1 or 2");
  if (noise_mode == 1) {
    TORCH_CHECK(noise.scalar_type() == acc && noise.is_contiguous() && noise.numel() == N * HW,
                "modulated_conv2d: noise (mode 1) must be a contiguous [N, H*W] tensor of the compute dtype");
  } else if (noise_mode == 2) {
    TORCH_CHECK(noise.scalar_type() == acc && noise.sizes() == z.sizes() && noise.strides() == z.strides(),
                "modulated_conv2d: noise (mode 2) must have z's shape and layout, compute dtype");
  }
}

at::Tensor or_fill(const c10::optional<at::Tensor>& t, at::IntArrayRef shape, double value, const at::Tensor& like) {
  if (t.has_value() && t->defined()) return *t;
  return at::full(shape, value, like.options().dtype(acc_scalar_type(like.scalar_type())));
}

// ---------------------------------------------------------------------------------------------
// Forward epilogue.

template <typename T, int ACT, int NMODE>
void epi_fwd_kernel(const T* __restrict z, const typename Acc<T>::type* __restrict d,
                    const typename Acc<T>::type* __restrict nz, const typename Acc<T>::type* __restrict b,
                    T* __restrict y, Dims dims, Layout layout, typename Acc<T>::type alpha,
                    typename Acc<T>::type gain, typename Acc<T>::type clampv) {
  using A = typename Acc<T>::type;
  const int64_t N = dims.N, O = dims.O, HW = dims.HW;
  if (layout == NCHW) {
    at::parallel_for(0, N * O, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / O, o = r % O;
        const A dn = d[r], bo = b[o];
        const T* zr = z + r * HW;
        T* yr = y + r * HW;
        const A* nr = NMODE == 1 ? nz + n * HW : (NMODE == 2 ? nz + r * HW : nullptr);
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) {
          A u = static_cast<A>(zr[p]) * dn + bo;
          if (NMODE != 0) u += nr[p];
          A v = act_f<ACT>(u, alpha) * gain;
          v = v < -clampv ? -clampv : (v > clampv ? clampv : v);
          yr[p] = static_cast<T>(v);
        }
      }
    });
  } else {
    at::parallel_for(0, N * HW, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / HW;
        const A* dr = d + n * O;
        const T* zr = z + r * O;
        T* yr = y + r * O;
        const A nzs = NMODE == 1 ? nz[r] : A(0);
        const A* nr = NMODE == 2 ? nz + r * O : nullptr;
#pragma omp simd
        for (int64_t o = 0; o < O; ++o) {
          A u = static_cast<A>(zr[o]) * dr[o] + b[o] + nzs;
          if (NMODE == 2) u += nr[o];
          A v = act_f<ACT>(u, alpha) * gain;
          v = v < -clampv ? -clampv : (v > clampv ? clampv : v);
          yr[o] = static_cast<T>(v);
        }
      }
    });
  }
}

template <typename T, int ACT>
void epi_fwd_mode(int64_t mode, const T* z, const typename Acc<T>::type* d, const typename Acc<T>::type* nz,
                  const typename Acc<T>::type* b, T* y, Dims dims, Layout layout, typename Acc<T>::type alpha,
                  typename Acc<T>::type gain, typename Acc<T>::type clampv) {
  if (mode == 0) epi_fwd_kernel<T, ACT, 0>(z, d, nz, b, y, dims, layout, alpha, gain, clampv);
  else if (mode == 1) epi_fwd_kernel<T, ACT, 1>(z, d, nz, b, y, dims, layout, alpha, gain, clampv);
  else epi_fwd_kernel<T, ACT, 2>(z, d, nz, b, y, dims, layout, alpha, gain, clampv);
}

at::Tensor modconv_epilogue_fwd(const at::Tensor& z, const c10::optional<at::Tensor>& d_opt,
                                const c10::optional<at::Tensor>& noise_opt, const c10::optional<at::Tensor>& b_opt,
                                int64_t noise_mode, int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK(z.dim() == 4, "modulated_conv2d: z must be 4-D");
  const int64_t N = z.size(0), O = z.size(1), HW = z.size(2) * z.size(3);
  const at::ScalarType acc = acc_scalar_type(z.scalar_type());
  at::Tensor d = or_fill(d_opt, {N, O}, 1.0, z);
  at::Tensor b = or_fill(b_opt, {O}, 0.0, z);
  at::Tensor noise = noise_mode != 0 && noise_opt.has_value() ? *noise_opt : at::Tensor();
  TORCH_CHECK(noise_mode == 0 || noise.defined(), "modulated_conv2d: noise_mode != 0 needs noise");
  check_common(z, d, noise, b, noise_mode, act, acc);
  const Layout layout = layout_of(z, "z");
  at::Tensor y = at::empty_like(z);
  if (z.numel() == 0) return y;
  const double cl = clamp < 0 ? std::numeric_limits<double>::infinity() : clamp;
  ILSGAN_DISPATCH_FLOATS(z.scalar_type(), "modconv_epilogue_fwd", [&] {
    using A = typename Acc<scalar_t>::type;
    const A* nzp = noise.defined() ? noise.data_ptr<A>() : nullptr;
    const Dims dims{N, O, HW};
    auto run = [&](auto act_tag) {
      constexpr int ACT = decltype(act_tag)::value;
      epi_fwd_mode<scalar_t, ACT>(noise_mode, z.data_ptr<scalar_t>(), d.data_ptr<A>(), nzp, b.data_ptr<A>(),
                                  y.data_ptr<scalar_t>(), dims, layout, A(alpha), A(gain), A(cl));
    };
    if (act == 1) run(std::integral_constant<int, 1>());
    else if (act == 2) run(std::integral_constant<int, 2>());
    else run(std::integral_constant<int, 3>());
  });
  return y;
}

// ---------------------------------------------------------------------------------------------
// Backward epilogue: one pass per sample.

template <typename T, int ACT, int NMODE>
void epi_bwd_kernel(const T* __restrict dy, const T* __restrict z, const typename Acc<T>::type* __restrict d,
                    const typename Acc<T>::type* __restrict nz, const typename Acc<T>::type* __restrict b,
                    T* __restrict dz, typename Acc<T>::type* __restrict dd, typename Acc<T>::type* __restrict dbp,
                    typename Acc<T>::type* __restrict dn, Dims dims, Layout layout, typename Acc<T>::type alpha,
                    typename Acc<T>::type gain, typename Acc<T>::type clampv) {
  using A = typename Acc<T>::type;
  const int64_t N = dims.N, O = dims.O, HW = dims.HW;
  if (layout == NCHW) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        A* dnr = NMODE == 1 ? dn + n * HW : nullptr;
        if (NMODE == 1) {
          for (int64_t p = 0; p < HW; ++p) dnr[p] = A(0);
        }
        for (int64_t o = 0; o < O; ++o) {
          const int64_t r = n * O + o;
          const A dno = d[r], bo = b[o];
          const T* zr = z + r * HW;
          const T* gr = dy + r * HW;
          T* dzr = dz + r * HW;
          const A* nr = NMODE == 1 ? nz + n * HW : (NMODE == 2 ? nz + r * HW : nullptr);
          A* dn2 = NMODE == 2 ? dn + r * HW : nullptr;
          A e = 0, s = 0;
#pragma omp simd reduction(+ : e, s)
          for (int64_t p = 0; p < HW; ++p) {
            const A zv = static_cast<A>(zr[p]);
            A u = zv * dno + bo;
            if (NMODE != 0) u += nr[p];
            const A v = act_f<ACT>(u, alpha) * gain;
            const A m = (v >= -clampv && v <= clampv) ? A(1) : A(0);
            const A du = static_cast<A>(gr[p]) * gain * act_d<ACT>(u, alpha) * m;
            dzr[p] = static_cast<T>(du * dno);
            e += du * zv;
            s += du;
            if (NMODE == 1) dnr[p] += du;
            if (NMODE == 2) dn2[p] = du;
          }
          dd[r] = e;
          dbp[r] = s;
        }
      }
    });
  } else {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<A> e(O), s(O);
      for (int64_t n = n0; n < n1; ++n) {
        std::fill(e.begin(), e.end(), A(0));
        std::fill(s.begin(), s.end(), A(0));
        A* ep = e.data();
        A* sp = s.data();
        const A* dr = d + n * O;
        for (int64_t p = 0; p < HW; ++p) {
          const int64_t r = n * HW + p;
          const T* zr = z + r * O;
          const T* gr = dy + r * O;
          T* dzr = dz + r * O;
          const A nzs = NMODE == 1 ? nz[r] : A(0);
          const A* nr = NMODE == 2 ? nz + r * O : nullptr;
          A* dn2 = NMODE == 2 ? dn + r * O : nullptr;
          A t = 0;
#pragma omp simd reduction(+ : t)
          for (int64_t o = 0; o < O; ++o) {
            const A zv = static_cast<A>(zr[o]);
            A u = zv * dr[o] + b[o] + nzs;
            if (NMODE == 2) u += nr[o];
            const A v = act_f<ACT>(u, alpha) * gain;
            const A m = (v >= -clampv && v <= clampv) ? A(1) : A(0);
            const A du = static_cast<A>(gr[o]) * gain * act_d<ACT>(u, alpha) * m;
            dzr[o] = static_cast<T>(du * dr[o]);
            ep[o] += du * zv;
            sp[o] += du;
            t += du;
            if (NMODE == 2) dn2[o] = du;
          }
          if (NMODE == 1) dn[r] = t;
        }
        for (int64_t o = 0; o < O; ++o) {
          dd[n * O + o] = ep[o];
          dbp[n * O + o] = sp[o];
        }
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> modconv_epilogue_bwd(
    const at::Tensor& dy, const at::Tensor& z, const c10::optional<at::Tensor>& d_opt,
    const c10::optional<at::Tensor>& noise_opt, const c10::optional<at::Tensor>& b_opt, int64_t noise_mode,
    int64_t act, double alpha, double gain, double clamp, bool need_dd, bool need_db, bool need_dnoise) {
  TORCH_CHECK(z.dim() == 4, "modulated_conv2d: z must be 4-D");
  const int64_t N = z.size(0), O = z.size(1), HW = z.size(2) * z.size(3);
  const at::ScalarType acc = acc_scalar_type(z.scalar_type());
  at::Tensor d = or_fill(d_opt, {N, O}, 1.0, z);
  at::Tensor b = or_fill(b_opt, {O}, 0.0, z);
  at::Tensor noise = noise_mode != 0 && noise_opt.has_value() ? *noise_opt : at::Tensor();
  TORCH_CHECK(noise_mode == 0 || noise.defined(), "modulated_conv2d: noise_mode != 0 needs noise");
  check_common(z, d, noise, b, noise_mode, act, acc);
  const Layout layout = layout_of(z, "z");
  TORCH_CHECK(dy.scalar_type() == z.scalar_type() && dy.sizes() == z.sizes() && dy.strides() == z.strides(),
              "modulated_conv2d: dy must have z's dtype, shape and layout");
  at::Tensor dz = at::empty_like(z);
  at::Tensor dd = at::empty({N, O}, z.options().dtype(acc));
  at::Tensor dbp = at::empty({N, O}, z.options().dtype(acc));
  at::Tensor dn;
  if (noise_mode == 1) dn = at::empty({N, HW}, z.options().dtype(acc));
  else if (noise_mode == 2) dn = at::empty_like(z, z.options().dtype(acc));
  else dn = at::empty({0}, z.options().dtype(acc));
  if (z.numel() == 0) {
    dd.zero_();
    dbp.zero_();
    dn.zero_();
  } else {
    const double cl = clamp < 0 ? std::numeric_limits<double>::infinity() : clamp;
    ILSGAN_DISPATCH_FLOATS(z.scalar_type(), "modconv_epilogue_bwd", [&] {
      using A = typename Acc<scalar_t>::type;
      const A* nzp = noise.defined() ? noise.data_ptr<A>() : nullptr;
      A* dnp = noise_mode != 0 ? dn.data_ptr<A>() : nullptr;
      const Dims dims{N, O, HW};
      auto run = [&](auto act_tag, auto mode_tag) {
        constexpr int ACT = decltype(act_tag)::value;
        constexpr int NM = decltype(mode_tag)::value;
        epi_bwd_kernel<scalar_t, ACT, NM>(dy.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), d.data_ptr<A>(), nzp,
                                          b.data_ptr<A>(), dz.data_ptr<scalar_t>(), dd.data_ptr<A>(),
                                          dbp.data_ptr<A>(), dnp, dims, layout, A(alpha), A(gain), A(cl));
      };
      auto by_mode = [&](auto act_tag) {
        if (noise_mode == 0) run(act_tag, std::integral_constant<int, 0>());
        else if (noise_mode == 1) run(act_tag, std::integral_constant<int, 1>());
        else run(act_tag, std::integral_constant<int, 2>());
      };
      if (act == 1) by_mode(std::integral_constant<int, 1>());
      else if (act == 2) by_mode(std::integral_constant<int, 2>());
      else by_mode(std::integral_constant<int, 3>());
    });
  }
  at::Tensor db = need_db ? dbp.sum(0) : at::empty({0}, z.options().dtype(acc));
  if (!need_dd) dd = at::empty({0}, z.options().dtype(acc));
  if (!need_dnoise) dn = at::empty({0}, z.options().dtype(acc));
  return std::make_tuple(dz, dd, db, dn);
}

// ---------------------------------------------------------------------------------------------
// Backward of xs = x * s: dx = dxs*s, ds = sum_hw dxs*x, one pass.

template <typename T>
void scale_bwd_kernel(const T* __restrict g, const T* __restrict x, const typename Acc<T>::type* __restrict s,
                      T* __restrict dx, typename Acc<T>::type* __restrict ds, int64_t N, int64_t C, int64_t HW,
                      Layout layout, bool need_ds) {
  using A = typename Acc<T>::type;
  if (layout == NCHW) {
    at::parallel_for(0, N * C, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const A sv = s[r];
        const T* gr = g + r * HW;
        const T* xr = x + r * HW;
        T* dxr = dx + r * HW;
        A acc = 0;
        if (need_ds) {
#pragma omp simd reduction(+ : acc)
          for (int64_t p = 0; p < HW; ++p) {
            const A gv = static_cast<A>(gr[p]);
            dxr[p] = static_cast<T>(gv * sv);
            acc += gv * static_cast<A>(xr[p]);
          }
          ds[r] = acc;
        } else {
#pragma omp simd
          for (int64_t p = 0; p < HW; ++p) dxr[p] = static_cast<T>(static_cast<A>(gr[p]) * sv);
        }
      }
    });
  } else {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<A> acc(C);
      for (int64_t n = n0; n < n1; ++n) {
        std::fill(acc.begin(), acc.end(), A(0));
        A* ap = acc.data();
        const A* sr = s + n * C;
        for (int64_t p = 0; p < HW; ++p) {
          const int64_t off = (n * HW + p) * C;
          const T* gr = g + off;
          const T* xr = x + off;
          T* dxr = dx + off;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const A gv = static_cast<A>(gr[c]);
            dxr[c] = static_cast<T>(gv * sr[c]);
            ap[c] += gv * static_cast<A>(xr[c]);
          }
        }
        if (need_ds)
          for (int64_t c = 0; c < C; ++c) ds[n * C + c] = ap[c];
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor> modconv_scale_bwd(const at::Tensor& dxs, const at::Tensor& x, const at::Tensor& s,
                                                     bool need_ds) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "modulated_conv2d: x must be a 4-D CPU tensor");
  check_float_dtype(x, "modulated_conv2d", "x");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const at::ScalarType acc = acc_scalar_type(x.scalar_type());
  const Layout layout = layout_of(x, "x");
  TORCH_CHECK(dxs.scalar_type() == x.scalar_type() && dxs.sizes() == x.sizes() && dxs.strides() == x.strides(),
              "modulated_conv2d: dxs must have x's dtype, shape and layout");
  TORCH_CHECK(s.scalar_type() == acc && s.is_contiguous() && s.dim() == 2 && s.size(0) == N && s.size(1) == C,
              "modulated_conv2d: s must be a contiguous [N, C] tensor of the compute dtype");
  at::Tensor dx = at::empty_like(x);
  at::Tensor ds = need_ds ? at::zeros({N, C}, x.options().dtype(acc)) : at::empty({0}, x.options().dtype(acc));
  if (x.numel() == 0) return std::make_tuple(dx, ds);
  ILSGAN_DISPATCH_FLOATS(x.scalar_type(), "modconv_scale_bwd", [&] {
    using A = typename Acc<scalar_t>::type;
    scale_bwd_kernel<scalar_t>(dxs.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), s.data_ptr<A>(),
                               dx.data_ptr<scalar_t>(), need_ds ? ds.data_ptr<A>() : nullptr, N, C, HW, layout,
                               need_ds);
  });
  return std::make_tuple(dx, ds);
}

// ---------------------------------------------------------------------------------------------
// Per-sample 1x1 convolution with few outputs (ToRGB).

constexpr int kMax1x1Outputs = 8;
constexpr int64_t kPixelBlock = 256;

template <typename T, int O>
void conv1x1_fwd_kernel(const T* __restrict x, const typename Acc<T>::type* __restrict w, T* __restrict z,
                        int64_t N, int64_t I, int64_t P) {
  using A = typename Acc<T>::type;
  const int64_t nblk = (P + kPixelBlock - 1) / kPixelBlock;
  at::parallel_for(0, N * nblk, 1, [&](int64_t t0, int64_t t1) {
    A acc[O][kPixelBlock];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / nblk, p0 = (t % nblk) * kPixelBlock, len = std::min(kPixelBlock, P - p0);
      for (int o = 0; o < O; ++o)
        for (int64_t j = 0; j < len; ++j) acc[o][j] = A(0);
      const A* wn = w + n * O * I;
      for (int64_t i = 0; i < I; ++i) {
        const T* xr = x + (n * I + i) * P + p0;
        A wv[O];
        for (int o = 0; o < O; ++o) wv[o] = wn[o * I + i];
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const A xv = static_cast<A>(xr[j]);
          for (int o = 0; o < O; ++o) acc[o][j] += wv[o] * xv;
        }
      }
      for (int o = 0; o < O; ++o) {
        T* zr = z + (n * O + o) * P + p0;
        for (int64_t j = 0; j < len; ++j) zr[j] = static_cast<T>(acc[o][j]);
      }
    }
  });
}

template <typename T, int O>
void conv1x1_bwd_kernel(const T* __restrict dz, const T* __restrict x, const typename Acc<T>::type* __restrict w,
                        T* __restrict dx, typename Acc<T>::type* __restrict dw, int64_t N, int64_t I, int64_t P) {
  using A = typename Acc<T>::type;
  constexpr int L = 16;  // partial sums per output: a fixed-order, vectorizable reduction
  at::parallel_for(0, N * I, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / I, i = r % I;
      const T* xr = x + r * P;
      const T* dzn = dz + n * O * P;
      A wv[O];
      for (int o = 0; o < O; ++o) wv[o] = w[(n * O + o) * I + i];
      A part[O][L] = {};
      T* dxr = dx ? dx + r * P : nullptr;
      int64_t p = 0;
      for (; p + L <= P; p += L) {
        A g[L];
        for (int k = 0; k < L; ++k) g[k] = A(0);
        for (int o = 0; o < O; ++o) {
          const T* dzr = dzn + o * P + p;
#pragma omp simd
          for (int k = 0; k < L; ++k) {
            const A d = static_cast<A>(dzr[k]);
            g[k] += wv[o] * d;
            part[o][k] += d * static_cast<A>(xr[p + k]);
          }
        }
        if (dxr)
          for (int k = 0; k < L; ++k) dxr[p + k] = static_cast<T>(g[k]);
      }
      for (; p < P; ++p) {
        A g = A(0);
        for (int o = 0; o < O; ++o) {
          const A d = static_cast<A>(dzn[o * P + p]);
          g += wv[o] * d;
          part[o][0] += d * static_cast<A>(xr[p]);
        }
        if (dxr) dxr[p] = static_cast<T>(g);
      }
      if (dw)
        for (int o = 0; o < O; ++o) {
          A sum = A(0);
          for (int k = 0; k < L; ++k) sum += part[o][k];
          dw[(n * O + o) * I + i] = sum;
        }
    }
  });
}

// Calls f(std::integral_constant<int, O>) so that the kernels get the output count at compile time.
template <typename F>
void with_outputs(int64_t O, F&& f) {
  switch (O) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: TORCH_CHECK(false, "modulated_conv2d: the 1x1 kernels take 1..", kMax1x1Outputs, " outputs, got ", O);
  }
}

void check_1x1(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu(),
              "modulated_conv2d: x must be an NCHW-contiguous CPU tensor [N, I, H, W]");
  check_float_dtype(x, "modulated_conv2d", "x");
  TORCH_CHECK(w.dim() == 3 && w.is_contiguous() && w.scalar_type() == acc_scalar_type(x.scalar_type()) &&
                  w.size(0) == x.size(0) && w.size(2) == x.size(1),
              "modulated_conv2d: w must be a contiguous [N, O, I] tensor of the compute dtype");
  TORCH_CHECK(w.size(1) >= 1 && w.size(1) <= kMax1x1Outputs, "modulated_conv2d: the 1x1 kernels take 1..",
              kMax1x1Outputs, " outputs, got ", w.size(1));
}

at::Tensor modconv_1x1_fwd(const at::Tensor& x, const at::Tensor& w) {
  check_1x1(x, w);
  const int64_t N = x.size(0), I = x.size(1), O = w.size(1), P = x.size(2) * x.size(3);
  at::Tensor z = at::empty({N, O, x.size(2), x.size(3)}, x.options());
  if (z.numel() == 0) return z;
  ILSGAN_DISPATCH_FLOATS(x.scalar_type(), "modconv_1x1_fwd", [&] {
    using A = typename Acc<scalar_t>::type;
    with_outputs(O, [&](auto oc) {
      conv1x1_fwd_kernel<scalar_t, decltype(oc)::value>(x.data_ptr<scalar_t>(), w.data_ptr<A>(),
                                                         z.data_ptr<scalar_t>(), N, I, P);
    });
  });
  return z;
}

std::tuple<at::Tensor, at::Tensor> modconv_1x1_bwd(const at::Tensor& dz, const at::Tensor& x, const at::Tensor& w,
                                                   bool need_dx, bool need_dw) {
  check_1x1(x, w);
  const int64_t N = x.size(0), I = x.size(1), O = w.size(1), P = x.size(2) * x.size(3);
  TORCH_CHECK(dz.is_contiguous() && dz.scalar_type() == x.scalar_type() && dz.dim() == 4 && dz.size(0) == N &&
                  dz.size(1) == O && dz.size(2) == x.size(2) && dz.size(3) == x.size(3),
              "modulated_conv2d: dz must be an NCHW-contiguous [N, O, H, W] tensor of x's dtype");
  at::Tensor dx = need_dx ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor dw = need_dw ? at::empty_like(w) : at::empty({0}, w.options());
  if ((!need_dx && !need_dw) || x.numel() == 0) {
    if (need_dw) dw.zero_();
    return std::make_tuple(dx, dw);
  }
  ILSGAN_DISPATCH_FLOATS(x.scalar_type(), "modconv_1x1_bwd", [&] {
    using A = typename Acc<scalar_t>::type;
    with_outputs(O, [&](auto oc) {
      conv1x1_bwd_kernel<scalar_t, decltype(oc)::value>(dz.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                         w.data_ptr<A>(), need_dx ? dx.data_ptr<scalar_t>() : nullptr,
                                                         need_dw ? dw.data_ptr<A>() : nullptr, N, I, P);
    });
  });
  return std::make_tuple(dx, dw);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cpu, m) {
  m.def("modconv_epilogue_fwd(Tensor z, Tensor? d, Tensor? noise, Tensor? b, int noise_mode, int act, float alpha, "
        "float gain, float clamp) -> Tensor",
        &modconv_epilogue_fwd);
  m.def("modconv_epilogue_bwd(Tensor dy, Tensor z, Tensor? d, Tensor? noise, Tensor? b, int noise_mode, int act, "
        "float alpha, float gain, float clamp, bool need_dd, bool need_db, bool need_dnoise) -> "
        "(Tensor, Tensor, Tensor, Tensor)",
        &modconv_epilogue_bwd);
  m.def("modconv_scale_bwd(Tensor dxs, Tensor x, Tensor s, bool need_ds) -> (Tensor, Tensor)", &modconv_scale_bwd);
  m.def("modconv_1x1_fwd(Tensor x, Tensor w) -> Tensor", &modconv_1x1_fwd);
  m.def("modconv_1x1_bwd(Tensor dz, Tensor x, Tensor w, bool need_dx, bool need_dw) -> (Tensor, Tensor)",
        &modconv_1x1_bwd);
}
