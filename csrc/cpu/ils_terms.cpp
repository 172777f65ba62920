// ILS (CLUB) term and mask-term reductions on CPU (semantics: ilsgan/ops/_ils_terms.py). Per sample:
//   pos1 = mean |m b - m f|,            neg1 = mean |m_p1 b_p1 - m f|
//   pos2 = mean |(1-m) f - (1-m) b|,    neg2 = mean |(1-m_p2) f_p2 - (1-m) b|
// (phi(u) = |u|, or 0.5 u^2 for the Gaussian variant), per sample, over C*H*W.
// Forward: one pass, parallel over samples; each sample's sums are formed in a fixed order (blocks
// of kBlk elements summed in the accumulation type, block sums added in double): deterministic.
// Backward: one pass, parallel over samples j; the negative terms' gradient into sample j as the
// permuted "x" side is gathered through the inverse permutation (no scatter, no atomics); the
// mask gradient is summed over channels in a row buffer. The gradient gate zeroes gf where
// |f| >= 1 and gb where |b| >= 1. Contiguous NCHW inputs; float32, float64, float16, bfloat16 (16-bit types: float32 math).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

using ilsgan::Acc;
using ilsgan::acc_scalar_type;
using ilsgan::check_float_dtype;

constexpr int64_t kBlk = 512;
constexpr int64_t kGrainElems = 32768;  // small problems stay serial (a parallel region costs more)

inline int64_t grain_for(int64_t per_item) { return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, per_item)); }

template <int D, typename T>
inline T phi(T u) {
  if constexpr (D == 0) return std::abs(u);
  else return T(0.5) * u * u;
}
template <int D, typename T>
inline T dphi(T u) {
  if constexpr (D == 0) return T(u > T(0)) - T(u < T(0));
  else return u;
}

void check_fbm(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m) {
  TORCH_CHECK(f.dim() == 4 && b.sizes() == f.sizes(), "ils_terms: f, b must be [N,C,H,W] of one shape");
  TORCH_CHECK(m.dim() == 4 && m.size(0) == f.size(0) && m.size(1) == 1 && m.size(2) == f.size(2) &&
                  m.size(3) == f.size(3),
              "ils_terms: m must be [N,1,H,W]");
  TORCH_CHECK(f.is_contiguous() && b.is_contiguous() && m.is_contiguous(), "ils_terms: f, b, m must be contiguous");
  check_float_dtype(f, "ils_terms", "f");
  TORCH_CHECK(b.scalar_type() == f.scalar_type() && m.scalar_type() == f.scalar_type(),
              "ils_terms: f, b, m must share one dtype");
}

void check_perm(const at::Tensor& p, int64_t N, const char* name) {
  TORCH_CHECK(p.scalar_type() == at::kLong && p.dim() == 1 && p.size(0) == N && p.is_contiguous(),
              "ils_terms: ", name, " must be a contiguous int64 tensor [N]");
  const int64_t* d = p.data_ptr<int64_t>();
  std::vector<char> seen(N, 0);
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK(d[i] >= 0 && d[i] < N && !seen[d[i]], "ils_terms: ", name, " must be a permutation of range(N)");
    seen[d[i]] = 1;
  }
}

template <int D, typename scalar_t>
void ils_fwd_kernel(const scalar_t* F, const scalar_t* B, const scalar_t* M, const int64_t* P1, const int64_t* P2,
                    typename Acc<scalar_t>::type* OUT, int64_t N, int64_t C, int64_t HW) {
  using acc_t = typename Acc<scalar_t>::type;
  const double inv = 1.0 / double(C * HW);
  at::parallel_for(0, N, grain_for(C * HW), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t p1 = P1[n], p2 = P2[n];
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      const scalar_t* mn = M + n * HW;
      const scalar_t* m1 = M + p1 * HW;
      const scalar_t* m2 = M + p2 * HW;
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* fn = F + (n * C + c) * HW;
        const scalar_t* bn = B + (n * C + c) * HW;
        const scalar_t* b1 = B + (p1 * C + c) * HW;
        const scalar_t* f2 = F + (p2 * C + c) * HW;
        for (int64_t i0 = 0; i0 < HW; i0 += kBlk) {
          const int64_t i1 = std::min(HW, i0 + kBlk);
          acc_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
          for (int64_t i = i0; i < i1; ++i) {
            const acc_t m = static_cast<acc_t>(mn[i]), f = static_cast<acc_t>(fn[i]), b = static_cast<acc_t>(bn[i]);
            const acc_t mb1 = static_cast<acc_t>(m1[i]), bb1 = static_cast<acc_t>(b1[i]);
            const acc_t mf2 = acc_t(1) - static_cast<acc_t>(m2[i]), ff2 = static_cast<acc_t>(f2[i]);
            const acc_t y1 = m * f, x1 = m * b;
            const acc_t om = acc_t(1) - m;
            const acc_t x2 = om * f, y2 = om * b;
            a0 += phi<D>(x1 - y1);
            a1 += phi<D>(mb1 * bb1 - y1);
            a2 += phi<D>(x2 - y2);
            a3 += phi<D>(mf2 * ff2 - y2);
          }
          s0 += a0; s1 += a1; s2 += a2; s3 += a3;
        }
      }
      OUT[4 * n + 0] = acc_t(s0 * inv);
      OUT[4 * n + 1] = acc_t(s1 * inv);
      OUT[4 * n + 2] = acc_t(s2 * inv);
      OUT[4 * n + 3] = acc_t(s3 * inv);
    }
  });
}

template <int D, typename scalar_t>
void ils_bwd_kernel(const typename Acc<scalar_t>::type* G, const scalar_t* F, const scalar_t* B, const scalar_t* M,
                    const int64_t* P1, const int64_t* P2, const int64_t* Q1, const int64_t* Q2, scalar_t* GF,
                    scalar_t* GB, scalar_t* GM, int64_t N, int64_t C, int64_t HW) {
  using acc_t = typename Acc<scalar_t>::type;
  const acc_t k = acc_t(1.0 / double(C * HW));
  at::parallel_for(0, N, grain_for(4 * C * HW), [&](int64_t j0, int64_t j1) {
    std::vector<acc_t> gmbuf(HW);
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t p1 = P1[j], p2 = P2[j], q1 = Q1[j], q2 = Q2[j];
      const acc_t g0 = G[4 * j] * k, g1 = G[4 * j + 1] * k, g2 = G[4 * j + 2] * k, g3 = G[4 * j + 3] * k;
      const acc_t h1 = G[4 * q1 + 1] * k, h3 = G[4 * q2 + 3] * k;
      const scalar_t* mj = M + j * HW;
      const scalar_t* mp1 = M + p1 * HW;
      const scalar_t* mq1 = M + q1 * HW;
      const scalar_t* mp2 = M + p2 * HW;
      const scalar_t* mq2 = M + q2 * HW;
      acc_t* gm = gmbuf.data();
      for (int64_t i = 0; i < HW; ++i) gm[i] = acc_t(0);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t oj = (j * C + c) * HW;
        const scalar_t* fj = F + oj;
        const scalar_t* bj = B + oj;
        const scalar_t* bp1 = B + (p1 * C + c) * HW;
        const scalar_t* fq1 = F + (q1 * C + c) * HW;
        const scalar_t* fp2 = F + (p2 * C + c) * HW;
        const scalar_t* bq2 = B + (q2 * C + c) * HW;
        scalar_t* gfj = GF + oj;
        scalar_t* gbj = GB + oj;
#pragma omp simd
        for (int64_t i = 0; i < HW; ++i) {
          const acc_t m = static_cast<acc_t>(mj[i]), f = static_cast<acc_t>(fj[i]), b = static_cast<acc_t>(bj[i]);
          const acc_t om = acc_t(1) - m;
          const acc_t y1 = m * f, x1 = m * b, x2 = om * f, y2 = om * b;
          // pair 1: positive, negative as y (partner p1), negative as x (partner q1)
          const acc_t d0 = g0 * dphi<D>(x1 - y1);
          const acc_t d1 = g1 * dphi<D>(static_cast<acc_t>(mp1[i]) * static_cast<acc_t>(bp1[i]) - y1);
          const acc_t e1 = h1 * dphi<D>(x1 - static_cast<acc_t>(mq1[i]) * static_cast<acc_t>(fq1[i]));
          // pair 2
          const acc_t d2 = g2 * dphi<D>(x2 - y2);
          const acc_t d3 = g3 * dphi<D>((acc_t(1) - static_cast<acc_t>(mp2[i])) * static_cast<acc_t>(fp2[i]) - y2);
          const acc_t e3 = h3 * dphi<D>(x2 - (acc_t(1) - static_cast<acc_t>(mq2[i])) * static_cast<acc_t>(bq2[i]));
          const acc_t gf = m * (-d0 - d1) + om * (d2 + e3);
          const acc_t gb = m * (d0 + e1) - om * (d2 + d3);
          gm[i] += d0 * (b - f) - d1 * f + e1 * b - d2 * (f - b) + d3 * b - e3 * f;
          gfj[i] = static_cast<scalar_t>(std::abs(f) < acc_t(1) ? gf : acc_t(0));
          gbj[i] = static_cast<scalar_t>(std::abs(b) < acc_t(1) ? gb : acc_t(0));
        }
      }
      scalar_t* gmj = GM + j * HW;
      for (int64_t i = 0; i < HW; ++i) gmj[i] = static_cast<scalar_t>(gm[i]);
    }
  });
}

at::Tensor ils_terms_fwd(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m, const at::Tensor& perm1,
                         const at::Tensor& perm2, int64_t dist) {
  check_fbm(f, b, m);
  const int64_t N = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3);
  check_perm(perm1, N, "perm1");
  check_perm(perm2, N, "perm2");
  TORCH_CHECK(dist == 0 || dist == 1, "ils_terms: dist must be 0 (laplace) or 1 (gaussian)");
  auto out = at::empty({N, 4}, f.options().dtype(acc_scalar_type(f.scalar_type())));
  if (f.numel() == 0) return out.fill_(0);
  ILSGAN_DISPATCH_FLOATS(f.scalar_type(), "ils_terms_fwd", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    auto fn = dist == 0 ? ils_fwd_kernel<0, scalar_t> : ils_fwd_kernel<1, scalar_t>;
    fn(f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), perm1.data_ptr<int64_t>(),
       perm2.data_ptr<int64_t>(), out.data_ptr<acc_t>(), N, C, HW);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ils_terms_bwd(const at::Tensor& g, const at::Tensor& f,
                                                             const at::Tensor& b, const at::Tensor& m,
                                                             const at::Tensor& perm1, const at::Tensor& perm2,
                                                             const at::Tensor& inv1, const at::Tensor& inv2,
                                                             int64_t dist) {
  check_fbm(f, b, m);
  const int64_t N = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3);
  check_perm(perm1, N, "perm1");
  check_perm(perm2, N, "perm2");
  check_perm(inv1, N, "inv1");
  check_perm(inv2, N, "inv2");
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK(inv1.data_ptr<int64_t>()[perm1.data_ptr<int64_t>()[i]] == i &&
                    inv2.data_ptr<int64_t>()[perm2.data_ptr<int64_t>()[i]] == i,
                "ils_terms_bwd: inv1/inv2 must be the inverse permutations of perm1/perm2");
  }
  TORCH_CHECK(dist == 0 || dist == 1, "ils_terms: dist must be 0 (laplace) or 1 (gaussian)");
  TORCH_CHECK(g.dim() == 2 && g.size(0) == N && g.size(1) == 4 && g.is_contiguous() &&
                  g.scalar_type() == acc_scalar_type(f.scalar_type()),
              "ils_terms_bwd: g must be a contiguous [N,4] tensor of the forward output's dtype");
  auto gf = at::empty_like(f, at::MemoryFormat::Contiguous);
  auto gb = at::empty_like(b, at::MemoryFormat::Contiguous);
  auto gm = at::zeros_like(m, at::MemoryFormat::Contiguous);
  if (f.numel() == 0) return {gf, gb, gm};
  ILSGAN_DISPATCH_FLOATS(f.scalar_type(), "ils_terms_bwd", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    auto fn = dist == 0 ? ils_bwd_kernel<0, scalar_t> : ils_bwd_kernel<1, scalar_t>;
    fn(g.data_ptr<acc_t>(), f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
       perm1.data_ptr<int64_t>(), perm2.data_ptr<int64_t>(), inv1.data_ptr<int64_t>(), inv2.data_ptr<int64_t>(),
       gf.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), gm.data_ptr<scalar_t>(), N, C, HW);
  });
  return {gf, gb, gm};
}

template <typename scalar_t>
void mask_fwd_kernel(const scalar_t* M, typename Acc<scalar_t>::type* O, int64_t N, int64_t D) {
  using acc_t = typename Acc<scalar_t>::type;
  at::parallel_for(0, N, grain_for(D), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t* p = M + n * D;
      double s0 = 0, s1 = 0;
      for (int64_t i0 = 0; i0 < D; i0 += kBlk) {
        const int64_t i1 = std::min(D, i0 + kBlk);
        acc_t a0 = 0, a1 = 0;
#pragma omp simd reduction(+ : a0, a1)
        for (int64_t i = i0; i < i1; ++i) {
          const acc_t v = static_cast<acc_t>(p[i]);
          a0 += std::min(v, acc_t(1) - v);
          a1 += v;
        }
        s0 += a0; s1 += a1;
      }
      O[2 * n] = acc_t(s0 / double(D));
      O[2 * n + 1] = acc_t(s1 / double(D));
    }
  });
}

template <typename scalar_t>
void mask_bwd_kernel(const typename Acc<scalar_t>::type* G, const scalar_t* M, scalar_t* O, int64_t N, int64_t D) {
  using acc_t = typename Acc<scalar_t>::type;
  const acc_t k = acc_t(1.0 / double(D));
  at::parallel_for(0, N, grain_for(D), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const acc_t g0 = G[2 * n] * k, g1 = G[2 * n + 1] * k;
      const scalar_t* p = M + n * D;
      scalar_t* o = O + n * D;
#pragma omp simd
      for (int64_t i = 0; i < D; ++i) {
        const acc_t v = static_cast<acc_t>(p[i]);
        const acc_t s = acc_t(v < acc_t(0.5)) - acc_t(v > acc_t(0.5));
        o[i] = static_cast<scalar_t>(g0 * s + g1);
      }
    }
  });
}

at::Tensor mask_terms_fwd(const at::Tensor& m) {
  TORCH_CHECK(m.dim() == 4 && m.is_contiguous(), "mask_terms: m must be a contiguous 4-D tensor");
  check_float_dtype(m, "mask_terms", "m");
  const int64_t N = m.size(0), D = m.numel() / std::max<int64_t>(1, N);
  auto out = at::empty({N, 2}, m.options().dtype(acc_scalar_type(m.scalar_type())));
  if (m.numel() == 0) return out.fill_(0);
  ILSGAN_DISPATCH_FLOATS(m.scalar_type(), "mask_terms_fwd", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    mask_fwd_kernel<scalar_t>(m.data_ptr<scalar_t>(), out.data_ptr<acc_t>(), N, D);
  });
  return out;
}

at::Tensor mask_terms_bwd(const at::Tensor& g, const at::Tensor& m) {
  TORCH_CHECK(m.dim() == 4 && m.is_contiguous(), "mask_terms: m must be a contiguous 4-D tensor");
  check_float_dtype(m, "mask_terms", "m");
  const int64_t N = m.size(0), D = m.numel() / std::max<int64_t>(1, N);
  TORCH_CHECK(g.dim() == 2 && g.size(0) == N && g.size(1) == 2 && g.is_contiguous() &&
                  g.scalar_type() == acc_scalar_type(m.scalar_type()),
              "mask_terms_bwd: g must be a contiguous [N,2] tensor of the forward output's dtype");
  auto gm = at::empty_like(m, at::MemoryFormat::Contiguous);
  if (m.numel() == 0) return gm;
  ILSGAN_DISPATCH_FLOATS(m.scalar_type(), "mask_terms_bwd", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    mask_bwd_kernel<scalar_t>(g.data_ptr<acc_t>(), m.data_ptr<scalar_t>(), gm.data_ptr<scalar_t>(), N, D);
  });
  return gm;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cpu, m) {
  m.def("ils_terms_fwd(Tensor f, Tensor b, Tensor m, Tensor perm1, Tensor perm2, int dist) -> Tensor", &ils_terms_fwd);
  m.def("ils_terms_bwd(Tensor g, Tensor f, Tensor b, Tensor m, Tensor perm1, Tensor perm2, Tensor inv1, Tensor inv2, "
        "int dist) -> (Tensor, Tensor, Tensor)",
        &ils_terms_bwd);
  m.def("mask_terms_fwd(Tensor m) -> Tensor", &mask_terms_fwd);
  m.def("mask_terms_bwd(Tensor g, Tensor m) -> Tensor", &mask_terms_bwd);
}
