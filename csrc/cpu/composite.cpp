// Layer compositing on CPU: out = ms*fs + (1-ms)*b with fs, ms = f, m translated per sample by an
// integer (tx, ty) with zero fill (fs[y][x] = f[y-ty][x-tx]); no shifted copy is materialized: each
// output row reads the source row at its shifted address, split into the uncovered and the covered
// x-ranges so that the inner loops are contiguous and branch-free (vectorized by -O3 -march=native).
// Backward in one pass over rows: gb (output domain) and gf, gm (input domain, adjoint shift) for
// the same row index. Inputs are contiguous NCHW (the Python wrapper guarantees it); float32,
// float64, float16 and bfloat16 (16-bit types computed in float32).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

using ilsgan::Acc;
using ilsgan::check_float_dtype;

// The covered x-range [x0, x1) of a row shifted by t (source x - t inside [0, W)).
inline void covered(int64_t t, int64_t W, int64_t& x0, int64_t& x1) {
  x0 = std::min(std::max(t, int64_t(0)), W);
  x1 = std::max(std::min(W + t, W), int64_t(0));
  if (x1 < x0) x1 = x0;
}

void check_inputs(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m,
                  const c10::optional<at::Tensor>& shift) {
  TORCH_CHECK(f.dim() == 4, "composite: f must be 4-D [N,C,H,W]");
  TORCH_CHECK(b.sizes() == f.sizes(), "composite: b must have the shape of f");
  TORCH_CHECK(m.dim() == 4 && m.size(0) == f.size(0) && m.size(1) == 1 && m.size(2) == f.size(2) &&
                  m.size(3) == f.size(3),
              "composite: m must be [N,1,H,W]");
  TORCH_CHECK(f.is_contiguous() && b.is_contiguous() && m.is_contiguous(),
              "composite: f, b, m must be contiguous");
  check_float_dtype(f, "composite", "f");
  TORCH_CHECK(b.scalar_type() == f.scalar_type() && m.scalar_type() == f.scalar_type(),
              "composite: f, b, m must share one dtype");
  TORCH_CHECK(f.device().is_cpu() && b.device().is_cpu() && m.device().is_cpu(),
              "composite: CPU tensors expected");
  if (shift.has_value()) {
    const auto& s = *shift;
    TORCH_CHECK(s.scalar_type() == at::kLong && s.dim() == 2 && s.size(0) == f.size(0) && s.size(1) == 2 &&
                    s.is_contiguous() && s.device().is_cpu(),
                "composite: shift must be a contiguous int64 CPU tensor [N,2]");
  }
}

// Work item: one sample; its channel planes are visited one after another (row by row inside a
// plane) so that only ~4 address streams are live at a time (f, b, m, out), and the mask-gradient
// accumulator of the backward (one plane in the accumulation type) stays in L2.
template <typename scalar_t>
void fwd_kernel(const scalar_t* F, const scalar_t* B, const scalar_t* M, const int64_t* S, scalar_t* O,
                scalar_t* MS, int64_t N, int64_t C, int64_t H, int64_t W) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t HW = H * W;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, HW * C));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t tx = S ? S[2 * n] : 0, ty = S ? S[2 * n + 1] : 0;
      for (int64_t c = -1; c < C; ++c) {
        if (c < 0 && !MS) continue;
        for (int64_t y = 0; y < H; ++y) {
          const int64_t sy = y - ty;
          int64_t x0 = 0, x1 = 0;
          if (sy >= 0 && sy < H) covered(tx, W, x0, x1);
          const scalar_t* mrow = M + n * HW + sy * W - tx;  // mrow[x] = m[sy][x - tx] for x in [x0, x1)
          if (c < 0) {  // the shifted mask
            scalar_t* o = MS + n * HW + y * W;
            for (int64_t x = 0; x < x0; ++x) o[x] = scalar_t(0);
            for (int64_t x = x0; x < x1; ++x) o[x] = mrow[x];
            for (int64_t x = x1; x < W; ++x) o[x] = scalar_t(0);
            continue;
          }
          const int64_t off = (n * C + c) * HW + y * W;
          const scalar_t* __restrict__ brow = B + off;
          scalar_t* __restrict__ orow = O + off;
          const scalar_t* __restrict__ frow = F + (n * C + c) * HW + sy * W - tx;
          for (int64_t x = 0; x < x0; ++x) orow[x] = brow[x];
#pragma omp simd
          for (int64_t x = x0; x < x1; ++x) {
            const acc_t mv = static_cast<acc_t>(mrow[x]);
            orow[x] = static_cast<scalar_t>(mv * static_cast<acc_t>(frow[x]) + (acc_t(1) - mv) * static_cast<acc_t>(brow[x]));
          }
          for (int64_t x = x1; x < W; ++x) orow[x] = brow[x];
        }
      }
    }
  });
}

template <typename scalar_t>
void bwd_kernel(const scalar_t* GO, const scalar_t* GMS, const scalar_t* F, const scalar_t* B, const scalar_t* M,
                const int64_t* S, scalar_t* GF, scalar_t* GB, scalar_t* GM, int64_t N, int64_t C, int64_t H,
                int64_t W) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t HW = H * W;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, HW * C));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    std::vector<acc_t> gmbuf(HW);
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t tx = S ? S[2 * n] : 0, ty = S ? S[2 * n + 1] : 0;
      acc_t* __restrict__ gmp = gmbuf.data();
      // gm starts as the gradient of the shifted mask, pulled back by the adjoint shift
      for (int64_t y = 0; y < H; ++y) {
        acc_t* g = gmp + y * W;
        for (int64_t x = 0; x < W; ++x) g[x] = acc_t(0);
        const int64_t oy = y + ty;
        int64_t x0 = 0, x1 = 0;
        if (GMS && oy >= 0 && oy < H) covered(-tx, W, x0, x1);
        const scalar_t* gs = GMS + n * HW + oy * W + tx;
        for (int64_t x = x0; x < x1; ++x) g[x] = static_cast<acc_t>(gs[x]);
      }
      for (int64_t c = 0; c < C; ++c) {
        const int64_t pl = (n * C + c) * HW;
        for (int64_t y = 0; y < H; ++y) {
          // (1) gb for output row y: gb = go * (1 - ms), ms[x] = m[y - ty][x - tx].
          {
            const int64_t sy = y - ty;
            int64_t x0 = 0, x1 = 0;
            if (sy >= 0 && sy < H) covered(tx, W, x0, x1);
            const scalar_t* __restrict__ mrow = M + n * HW + sy * W - tx;
            const scalar_t* __restrict__ g = GO + pl + y * W;
            scalar_t* __restrict__ o = GB + pl + y * W;
            for (int64_t x = 0; x < x0; ++x) o[x] = g[x];
#pragma omp simd
            for (int64_t x = x0; x < x1; ++x)
              o[x] = static_cast<scalar_t>(static_cast<acc_t>(g[x]) * (acc_t(1) - static_cast<acc_t>(mrow[x])));
            for (int64_t x = x1; x < W; ++x) o[x] = g[x];
          }
          // (2) gf, gm for input row y: output row oy = y + ty, column x + tx.
          {
            const int64_t oy = y + ty;
            int64_t x0 = 0, x1 = 0;
            if (oy >= 0 && oy < H) covered(-tx, W, x0, x1);
            const scalar_t* __restrict__ mrow = M + n * HW + y * W;
            const scalar_t* __restrict__ frow = F + pl + y * W;
            scalar_t* __restrict__ gfrow = GF + pl + y * W;
            const scalar_t* __restrict__ g = GO + pl + oy * W + tx;
            const scalar_t* __restrict__ brow = B + pl + oy * W + tx;
            acc_t* __restrict__ gm = gmp + y * W;
            for (int64_t x = 0; x < x0; ++x) gfrow[x] = scalar_t(0);
#pragma omp simd
            for (int64_t x = x0; x < x1; ++x) {
              const acc_t gv = static_cast<acc_t>(g[x]);
              gfrow[x] = static_cast<scalar_t>(gv * static_cast<acc_t>(mrow[x]));
              gm[x] += gv * static_cast<acc_t>(frow[x]) - gv * static_cast<acc_t>(brow[x]);
            }
            for (int64_t x = x1; x < W; ++x) gfrow[x] = scalar_t(0);
          }
        }
      }
      scalar_t* gmo = GM + n * HW;
      for (int64_t i = 0; i < HW; ++i) gmo[i] = static_cast<scalar_t>(gmp[i]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> composite_fwd(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m,
                                                 const c10::optional<at::Tensor>& shift) {
  check_inputs(f, b, m, shift);
  auto out = at::empty_like(f, at::MemoryFormat::Contiguous);
  auto ms = shift.has_value() ? at::empty_like(m, at::MemoryFormat::Contiguous) : at::empty({0}, m.options());
  const int64_t N = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  if (f.numel() == 0) return {out, ms};
  const int64_t* S = shift.has_value() ? shift->data_ptr<int64_t>() : nullptr;
  ILSGAN_DISPATCH_FLOATS(f.scalar_type(), "composite_fwd", [&] {
    fwd_kernel<scalar_t>(f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), S,
                         out.data_ptr<scalar_t>(), shift.has_value() ? ms.data_ptr<scalar_t>() : nullptr, N, C, H, W);
  });
  return {out, ms};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_bwd(const at::Tensor& go, const c10::optional<at::Tensor>& gms,
                                                             const at::Tensor& f, const at::Tensor& b,
                                                             const at::Tensor& m,
                                                             const c10::optional<at::Tensor>& shift) {
  check_inputs(f, b, m, shift);
  TORCH_CHECK(go.sizes() == f.sizes() && go.is_contiguous() && go.scalar_type() == f.scalar_type(),
              "composite_bwd: go must be contiguous, with f's shape and dtype");
  if (gms.has_value()) {
    TORCH_CHECK(gms->sizes() == m.sizes() && gms->is_contiguous() && gms->scalar_type() == f.scalar_type(),
                "composite_bwd: gms must be contiguous, with m's shape and dtype");
  }
  auto gf = at::empty_like(f, at::MemoryFormat::Contiguous);
  auto gb = at::empty_like(b, at::MemoryFormat::Contiguous);
  auto gm = at::empty_like(m, at::MemoryFormat::Contiguous);
  const int64_t N = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  if (f.numel() == 0) {
    gm.zero_();
    return {gf, gb, gm};
  }
  const int64_t* S = shift.has_value() ? shift->data_ptr<int64_t>() : nullptr;
  ILSGAN_DISPATCH_FLOATS(f.scalar_type(), "composite_bwd", [&] {
    bwd_kernel<scalar_t>(go.data_ptr<scalar_t>(), gms.has_value() ? gms->data_ptr<scalar_t>() : nullptr,
                         f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), S,
                         gf.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), gm.data_ptr<scalar_t>(), N, C, H, W);
  });
  return {gf, gb, gm};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cpu, m) {
  m.def("composite_fwd(Tensor f, Tensor b, Tensor m, Tensor? shift) -> (Tensor, Tensor)", &composite_fwd);
  m.def("composite_bwd(Tensor go, Tensor? gms, Tensor f, Tensor b, Tensor m, Tensor? shift) -> (Tensor, Tensor, Tensor)",
        &composite_bwd);
}
