// upfirdn2d on CPU: polyphase FIR up/down-sampling of NCHW planes (NVlabs StyleGAN2-ADA semantics).
//
//   y[oy, ox] = gain * sum_{ky, kx} w[ky, kx] * u[oy*downy + ky - py0, ox*downx + kx - px0]
//
// where u is the input with (up-1) zeros inserted after every pixel (never materialized) and w the
// filter, flipped unless flip_filter (true convolution). Only the taps that hit a non-zero of u are
// visited: for output o along an axis, with s = o*down - p0, the taps are k = k0, k0+up, ... with
// k0 = (-s) mod up, reading input pixel i = (s + k0) / up, i+1, ...
//
// Plan per plane (parallel over the N*C planes with at::parallel_for):
//  * separable filter (1-D f, or a 2-D f that is an exact outer product, like setup_filter([1,3,3,1])):
//    a horizontal pass of every input row into a [H, OW] buffer, then a vertical pass that combines
//    whole rows (contiguous, vectorized axpy). Hot cases get compile-time up/down factors
//    (up=2, down=2, up=down=1) so the inner loops vectorize;
//  * separable with up = down = 1 on both axes: run_flat (whole-plane passes, see there);
//  * other 2-D filters: each output row is the sum over its valid ky of a horizontal pass of input
//    row iy with filter row ky (same row kernels).
// Rows are copied once into a zero-padded buffer (in the compute type), so inner loops have no
// bounds checks. float16/bfloat16 are computed in float32, float32 in float32, float64 in float64.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

using ilsgan::Acc;
using ilsgan::check_float_dtype;

inline int64_t floordiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t posmod(int64_t a, int64_t b) { int64_t r = a % b; return r < 0 ? r + b : r; }

// One horizontal pass: out[o] = sum_k w[k] * u[o*down + k - p0] for o in [0, ow), where
// u[j] = row[j / up] when j % up == 0 (row = padded buffer, row[i] valid for the range the caller
// padded). UP / DOWN > 0 are compile-time factors, 0 means the runtime values.
template <typename acc_t, int UP, int DOWN>
void row_pass(const acc_t* __restrict row, acc_t* __restrict out, int64_t ow, const acc_t* __restrict w,
              int taps, int up_rt, int down_rt, int64_t p0, acc_t* __restrict scratch) {
  const int up = UP > 0 ? UP : up_rt;
  const int down = DOWN > 0 ? DOWN : down_rt;
  if (up == 1) {
    // out[o] = sum_k w[k] * row[o*down + k - p0]
    for (int64_t o = 0; o < ow; ++o) out[o] = acc_t(0);
    for (int k = 0; k < taps; ++k) {
      const acc_t wk = w[k];
      const acc_t* __restrict src = row + (k - p0);
      if (down == 1) {
#pragma omp simd
        for (int64_t o = 0; o < ow; ++o) out[o] += wk * src[o];
      } else {
        for (int64_t o = 0; o < ow; ++o) out[o] += wk * src[o * down];
      }
    }
    return;
  }
  if (down == 1) {
    // Phase r: outputs o = m*up + r read row[m + c + t] with tap k0 + t*up.
    for (int r = 0; r < up; ++r) {
      const int64_t k0 = posmod(p0 - r, up);
      const int64_t c = (r - p0 + k0) / up;  // exact
      const int64_t m_end = (ow - r + up - 1) / up;  // outputs of this phase
      if (m_end <= 0) continue;
      for (int64_t m = 0; m < m_end; ++m) scratch[m] = acc_t(0);
      for (int64_t k = k0, t = 0; k < taps; k += up, ++t) {
        const acc_t wk = w[k];
        const acc_t* __restrict src = row + c + t;
#pragma omp simd
        for (int64_t m = 0; m < m_end; ++m) scratch[m] += wk * src[m];
      }
      for (int64_t m = 0; m < m_end; ++m) out[m * up + r] = scratch[m];
    }
    return;
  }
  // Generic: both factors > 1.
  for (int64_t o = 0; o < ow; ++o) {
    const int64_t s = o * down - p0;
    const int64_t k0 = posmod(-s, up);
    int64_t i = (s + k0) / up;
    acc_t acc = 0;
    for (int64_t k = k0; k < taps; k += up, ++i) acc += w[k] * row[i];
    out[o] = acc;
  }
}

// Fixed filter size FT (compile time), the hot cases: one pass over the row per output element
// (all taps unrolled), vectorized across outputs.
template <typename acc_t, int DOWN, int FT>
void row_pass_fixed_down(const acc_t* __restrict row, acc_t* __restrict out, int64_t ow, const acc_t* __restrict w,
                         int, int, int, int64_t p0, acc_t*) {
  acc_t wk[FT];
  for (int k = 0; k < FT; ++k) wk[k] = w[k];
  const acc_t* __restrict src = row - p0;
#pragma omp simd
  for (int64_t o = 0; o < ow; ++o) {
    acc_t acc = 0;
#pragma unroll
    for (int k = 0; k < FT; ++k) acc += wk[k] * src[o * DOWN + k];
    out[o] = acc;
  }
}

// up = 2, down = 1, FT even: both phases have FT/2 taps; outputs 2m and 2m+1 in one loop.
template <typename acc_t, int FT>
void row_pass_fixed_up2(const acc_t* __restrict row, acc_t* __restrict out, int64_t ow, const acc_t* __restrict w,
                        int, int, int, int64_t p0, acc_t*) {
  constexpr int T = FT / 2;
  acc_t w0[T], w1[T];
  const int64_t k00 = posmod(p0, 2), k01 = posmod(p0 - 1, 2);
  const int64_t c0 = (-p0 + k00) / 2, c1 = (1 - p0 + k01) / 2;
  for (int t = 0; t < T; ++t) { w0[t] = w[k00 + 2 * t]; w1[t] = w[k01 + 2 * t]; }
  const acc_t* __restrict s0 = row + c0;
  const acc_t* __restrict s1 = row + c1;
  const int64_t pairs = ow / 2;
#pragma omp simd
  for (int64_t m = 0; m < pairs; ++m) {
    acc_t a0 = 0, a1 = 0;
#pragma unroll
    for (int t = 0; t < T; ++t) { a0 += w0[t] * s0[m + t]; a1 += w1[t] * s1[m + t]; }
    out[2 * m] = a0;
    out[2 * m + 1] = a1;
  }
  if (ow & 1) {
    acc_t a0 = 0;
    for (int t = 0; t < T; ++t) a0 += w0[t] * s0[pairs + t];
    out[ow - 1] = a0;
  }
}

template <typename acc_t>
using RowFn = void (*)(const acc_t*, acc_t*, int64_t, const acc_t*, int, int, int, int64_t, acc_t*);

template <typename acc_t>
RowFn<acc_t> pick_row_fn(int up, int down, int taps) {
  if (taps == 4 && up == 1 && down == 1) return &row_pass_fixed_down<acc_t, 1, 4>;
  if (taps == 4 && up == 1 && down == 2) return &row_pass_fixed_down<acc_t, 2, 4>;
  if (taps == 4 && up == 2 && down == 1) return &row_pass_fixed_up2<acc_t, 4>;
  if (taps == 3 && up == 1 && down == 1) return &row_pass_fixed_down<acc_t, 1, 3>;
  if (taps == 2 && up == 1 && down == 2) return &row_pass_fixed_down<acc_t, 2, 2>;
  if (up == 1 && down == 1) return &row_pass<acc_t, 1, 1>;
  if (up == 2 && down == 1) return &row_pass<acc_t, 2, 1>;
  if (up == 1 && down == 2) return &row_pass<acc_t, 1, 2>;
  if (up == 4 && down == 1) return &row_pass<acc_t, 4, 1>;
  if (up == 1 && down == 4) return &row_pass<acc_t, 1, 4>;
  return &row_pass<acc_t, 0, 0>;
}

// Range of input indices [lo, hi] a horizontal pass reads for outputs [0, ow).
inline void read_range(int64_t ow, int taps, int up, int down, int64_t p0, int64_t* lo, int64_t* hi) {
  *lo = floordiv(-p0, up);
  *hi = floordiv((ow - 1) * down - p0 + taps - 1, up);
}

// dst[o] = sum_j w[j] * rows[j][o] (j < n), fused for up to 4 rows; n == 0 gives zeros.
template <typename scalar_t, typename acc_t>
void vertical(const acc_t* const* rows, const acc_t* w, int n, int64_t ow, scalar_t* __restrict dst,
              acc_t* __restrict acc) {
  if (n == 0) {
    for (int64_t o = 0; o < ow; ++o) dst[o] = static_cast<scalar_t>(acc_t(0));
    return;
  }
  if (n <= 4) {
    const acc_t* __restrict r0 = rows[0];
    const acc_t* __restrict r1 = rows[n > 1 ? 1 : 0];
    const acc_t* __restrict r2 = rows[n > 2 ? 2 : 0];
    const acc_t* __restrict r3 = rows[n > 3 ? 3 : 0];
    const acc_t w0 = w[0], w1 = n > 1 ? w[1] : acc_t(0), w2 = n > 2 ? w[2] : acc_t(0), w3 = n > 3 ? w[3] : acc_t(0);
    switch (n) {
      case 1:
#pragma omp simd
        for (int64_t o = 0; o < ow; ++o) dst[o] = static_cast<scalar_t>(w0 * r0[o]);
        break;
      case 2:
#pragma omp simd
        for (int64_t o = 0; o < ow; ++o) dst[o] = static_cast<scalar_t>(w0 * r0[o] + w1 * r1[o]);
        break;
      case 3:
#pragma omp simd
        for (int64_t o = 0; o < ow; ++o) dst[o] = static_cast<scalar_t>(w0 * r0[o] + w1 * r1[o] + w2 * r2[o]);
        break;
      default:
#pragma omp simd
        for (int64_t o = 0; o < ow; ++o)
          dst[o] = static_cast<scalar_t>(w0 * r0[o] + w1 * r1[o] + w2 * r2[o] + w3 * r3[o]);
        break;
    }
    return;
  }
  for (int64_t o = 0; o < ow; ++o) acc[o] = acc_t(0);
  for (int j = 0; j < n; ++j) {
    const acc_t wj = w[j];
    const acc_t* __restrict r = rows[j];
#pragma omp simd
    for (int64_t o = 0; o < ow; ++o) acc[o] += wj * r[o];
  }
  for (int64_t o = 0; o < ow; ++o) dst[o] = static_cast<scalar_t>(acc[o]);
}

// dst[j] = sum_k w[k] * src[j + k * step] for j in [0, n): one long vectorized loop (4 taps fused,
// the hot [1,3,3,1] case), else one axpy pass per tap.
template <typename acc_t>
void flat_fir(const acc_t* __restrict src, acc_t* __restrict dst, int64_t n, const acc_t* w, int taps,
              int64_t step) {
  if (taps == 4) {
    const acc_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    const acc_t* __restrict s1 = src + step;
    const acc_t* __restrict s2 = src + 2 * step;
    const acc_t* __restrict s3 = src + 3 * step;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dst[j] = w0 * src[j] + w1 * s1[j] + w2 * s2[j] + w3 * s3[j];
    return;
  }
  const acc_t w0 = w[0];
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dst[j] = w0 * src[j];
  for (int k = 1; k < taps; ++k) {
    const acc_t wk = w[k];
    const acc_t* __restrict sk = src + k * step;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dst[j] += wk * sk[j];
  }
}

// Separable filter with up = down = 1 on both axes (the 4x4 FIR that follows a transposed conv, and
// its gradient). Small planes made the row-by-row plan loop-overhead bound, so here the plane is
// copied once into a zero-bordered buffer P (row stride S) and each pass is ONE loop over the whole
// plane: T[j] = sum_k wx[k] P[j + c0 + k], then V[j] = sum_k wy[k] T[j + (r0 + k) S]. Positions past
// a row's last output compute values that are never read; the border sizes keep every read inside
// the buffers (S >= c0 + OW + fw - 1, R >= r0 + OH + fh - 1).
template <typename scalar_t, typename acc_t>
void run_flat(const at::Tensor& x, at::Tensor& y, const std::vector<double>& wx, const std::vector<double>& wy,
              int fw, int fh, int64_t px0, int64_t py0) {
  const int64_t planes = x.size(0) * x.size(1);
  const int64_t H = x.size(2), W = x.size(3), OH = y.size(2), OW = y.size(3);
  const int64_t left = std::max<int64_t>(0, px0);
  const int64_t right = std::max<int64_t>(0, (OW - 1) + (fw - 1) - px0 - (W - 1));
  const int64_t top = std::max<int64_t>(0, py0);
  const int64_t bottom = std::max<int64_t>(0, (OH - 1) + (fh - 1) - py0 - (H - 1));
  const int64_t S = left + W + right, R = top + H + bottom;
  const int64_t c0 = left - px0, r0 = top - py0;  // both >= 0
  const int64_t nt = R * S - c0 - (fw - 1);         // horizontal outputs (covers every row's OW)
  const int64_t nv = (OH - 1) * S + OW;             // vertical outputs
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  std::vector<acc_t> WX(wx.begin(), wx.end()), WY(wy.begin(), wy.end());
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, R * S * (fw + fh)));

  at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> P(R * S, acc_t(0)), T(R * S, acc_t(0)), V(nv);
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* xplane = xp + p * H * W;
      for (int64_t iy = 0; iy < H; ++iy) {
        const scalar_t* src = xplane + iy * W;
        acc_t* dst = P.data() + (top + iy) * S + left;
        for (int64_t i = 0; i < W; ++i) dst[i] = static_cast<acc_t>(src[i]);
      }
      flat_fir(P.data() + c0, T.data(), nt, WX.data(), fw, 1);
      flat_fir(T.data() + r0 * S, V.data(), nv, WY.data(), fh, S);
      scalar_t* yplane = yp + p * OH * OW;
      for (int64_t oy = 0; oy < OH; ++oy) {
        const acc_t* src = V.data() + oy * S;
        scalar_t* dst = yplane + oy * OW;
        for (int64_t o = 0; o < OW; ++o) dst[o] = static_cast<scalar_t>(src[o]);
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void run(const at::Tensor& x, at::Tensor& y, const std::vector<double>& wx, const std::vector<double>& wy,
         const std::vector<double>& w2, bool separable, int fw, int fh, int upx, int upy, int downx, int downy,
         int64_t px0, int64_t py0) {
  if (separable && upx == 1 && upy == 1 && downx == 1 && downy == 1) {
    run_flat<scalar_t, acc_t>(x, y, wx, wy, fw, fh, px0, py0);
    return;
  }
  const int64_t planes = x.size(0) * x.size(1);
  const int64_t H = x.size(2), W = x.size(3), OH = y.size(2), OW = y.size(3);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();

  std::vector<acc_t> WX(wx.begin(), wx.end()), WY(wy.begin(), wy.end()), W2(w2.begin(), w2.end());
  int64_t lo, hi;
  read_range(OW, fw, upx, downx, px0, &lo, &hi);
  const int64_t left = std::max<int64_t>(0, -lo), right = std::max<int64_t>(0, hi - (W - 1));
  const int64_t padw = left + W + right;
  const RowFn<acc_t> row_fn = pick_row_fn<acc_t>(upx, downx, fw);
  const int64_t work = std::max<int64_t>(1, (H * OW * fw) / upx + (OH * OW * fh) / upy);
  const int64_t grain = std::max<int64_t>(1, 32768 / work);

  at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> rowbuf(padw, acc_t(0));
    std::vector<acc_t> scratch(OW + 8);
    std::vector<acc_t> acc(OW);
    std::vector<acc_t> tmp(separable ? H * OW : OW);
    std::vector<acc_t> vw(fh);
    std::vector<const acc_t*> vr(fh);
    acc_t* row0 = rowbuf.data() + left;  // row0[i] = x[iy, i]
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* xplane = xp + p * H * W;
      scalar_t* yplane = yp + p * OH * OW;
      auto load_row = [&](int64_t iy) {
        const scalar_t* src = xplane + iy * W;
        for (int64_t i = 0; i < W; ++i) row0[i] = static_cast<acc_t>(src[i]);
      };
      if (separable) {
        // Which input rows are read at all.
        int64_t ylo, yhi;
        read_range(OH, fh, upy, downy, py0, &ylo, &yhi);
        ylo = std::max<int64_t>(ylo, 0);
        yhi = std::min<int64_t>(yhi, H - 1);
        for (int64_t iy = ylo; iy <= yhi; ++iy) {
          load_row(iy);
          row_fn(row0, tmp.data() + iy * OW, OW, WX.data(), fw, upx, downx, px0, scratch.data());
        }
        for (int64_t oy = 0; oy < OH; ++oy) {
          const int64_t s = oy * downy - py0;
          const int64_t k0 = posmod(-s, upy);
          int64_t iy = (s + k0) / upy;
          // Gather the valid rows, then one fused pass over them.
          int n = 0;
          for (int64_t k = k0; k < fh; k += upy, ++iy) {
            if (iy < 0 || iy >= H) continue;
            vw[n] = WY[k];
            vr[n] = tmp.data() + iy * OW;
            ++n;
          }
          scalar_t* __restrict dst = yplane + oy * OW;
          vertical(vr.data(), vw.data(), n, OW, dst, acc.data());
        }
      } else {
        for (int64_t oy = 0; oy < OH; ++oy) {
          const int64_t s = oy * downy - py0;
          const int64_t k0 = posmod(-s, upy);
          int64_t iy = (s + k0) / upy;
          acc_t* __restrict a = acc.data();
          for (int64_t o = 0; o < OW; ++o) a[o] = acc_t(0);
          for (int64_t k = k0; k < fh; k += upy, ++iy) {
            if (iy < 0 || iy >= H) continue;
            load_row(iy);
            row_fn(row0, tmp.data(), OW, W2.data() + k * fw, fw, upx, downx, px0, scratch.data());
            const acc_t* __restrict t = tmp.data();
#pragma omp simd
            for (int64_t o = 0; o < OW; ++o) a[o] += t[o];
          }
          scalar_t* __restrict dst = yplane + oy * OW;
          for (int64_t o = 0; o < OW; ++o) dst[o] = static_cast<scalar_t>(a[o]);
        }
      }
    }
  });
}

// Rank-1 test of a 2-D filter (double): f = u v^T exactly (to 1e-13 of its largest tap).
bool factor_rank1(const std::vector<double>& f, int fh, int fw, std::vector<double>* u, std::vector<double>* v) {
  int bi = 0, bj = 0;
  double best = -1;
  for (int i = 0; i < fh; ++i)
    for (int j = 0; j < fw; ++j)
      if (std::abs(f[i * fw + j]) > best) { best = std::abs(f[i * fw + j]); bi = i; bj = j; }
  if (!(best > 0) || !std::isfinite(best)) return false;
  u->assign(fh, 0.0);
  v->assign(fw, 0.0);
  for (int i = 0; i < fh; ++i) (*u)[i] = f[i * fw + bj];
  for (int j = 0; j < fw; ++j) (*v)[j] = f[bi * fw + j] / f[bi * fw + bj];
  for (int i = 0; i < fh; ++i)
    for (int j = 0; j < fw; ++j)
      if (std::abs(f[i * fw + j] - (*u)[i] * (*v)[j]) > 1e-13 * best) return false;
  return true;
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter,
                         double gain) {
  TORCH_CHECK(x.device().is_cpu(), "upfirdn2d (cpu): x must be a CPU tensor");
  TORCH_CHECK(f.device().is_cpu(), "upfirdn2d (cpu): f must be a CPU tensor");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d (cpu): x must be 4-D [N, C, H, W]");
  TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "upfirdn2d (cpu): f must be 1-D or 2-D");
  TORCH_CHECK(f.scalar_type() == at::kFloat, "upfirdn2d (cpu): f must be float32");
  TORCH_CHECK(f.numel() > 0, "upfirdn2d (cpu): f must not be empty");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d (cpu): up and down must be >= 1");
  TORCH_CHECK(upx <= 1024 && upy <= 1024 && downx <= 1024 && downy <= 1024, "upfirdn2d (cpu): factors too large");
  check_float_dtype(x, "upfirdn2d (cpu)", "x");
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK(H >= 1 && W >= 1, "upfirdn2d (cpu): x must have a non-empty height and width");
  const int fw = static_cast<int>(f.size(-1)), fh = static_cast<int>(f.size(0));
  const int64_t OH = (H * upy + py0 + py1 - fh + downy) / downy;
  const int64_t OW = (W * upx + px0 + px1 - fw + downx) / downx;
  TORCH_CHECK(H * upy + py0 + py1 - fh >= 0 && W * upx + px0 + px1 - fw >= 0 && OH >= 1 && OW >= 1,
              "upfirdn2d (cpu): the output would be smaller than 1x1");

  at::Tensor xc = x.contiguous();
  at::Tensor fc = f.contiguous().to(at::kDouble);
  const double* fp = fc.data_ptr<double>();

  // Effective taps (flipped for a true convolution), gain folded into the x taps.
  std::vector<double> wx, wy, w2;
  bool separable = false;
  if (f.dim() == 1) {
    separable = true;
    wx.resize(fw);
    wy.resize(fh);
    for (int k = 0; k < fw; ++k) wx[k] = fp[flip_filter ? k : fw - 1 - k] * gain;
    for (int k = 0; k < fh; ++k) wy[k] = fp[flip_filter ? k : fh - 1 - k];
  } else {
    w2.resize(static_cast<size_t>(fh) * fw);
    for (int i = 0; i < fh; ++i)
      for (int j = 0; j < fw; ++j)
        w2[i * fw + j] = fp[flip_filter ? i * fw + j : (fh - 1 - i) * fw + (fw - 1 - j)] * gain;
    std::vector<double> u, v;
    if (factor_rank1(w2, fh, fw, &u, &v)) {
      separable = true;
      wx = v;
      wy = u;
    }
  }

  at::Tensor y = at::empty({x.size(0), x.size(1), OH, OW}, x.options());
  if (y.numel() == 0) return y;
  ILSGAN_DISPATCH_FLOATS(x.scalar_type(), "upfirdn2d_cpu", [&] {
    using acc_t = Acc<scalar_t>::type;
    run<scalar_t, acc_t>(xc, y, wx, wy, w2, separable, fw, fh, static_cast<int>(upx), static_cast<int>(upy),
                         static_cast<int>(downx), static_cast<int>(downy), px0, py0);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cpu, m) {
  m.def(
      "upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int px0, int px1, int py0, int py1, "
      "bool flip_filter, float gain) -> Tensor",
      &upfirdn2d_cpu);
}
