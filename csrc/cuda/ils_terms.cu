// ILS (CLUB) term and mask-term reductions on CUDA (semantics: ilsgan/ops/_ils_terms.py).
// Forward reductions: grid (T, N), 256 threads; block t of sample n sums a fixed chunk of kChunk
// elements of C*H*W (grid-strided inside the chunk, coalesced), reduces its 4 (or 2) sums with warp
// shuffles and shared memory, and writes them to a [N,T,k] partial tensor; the partials are summed
// in double by at::sum (fixed order): deterministic, no atomics. Backward: grid (cdiv(HW,256), N),
// one thread per pixel looping over the channels (the mask gradient is a channel sum in a
// register); the negative pairs' gradient into the permuted side is gathered through the inverse
// permutation. float/double/half/bfloat16 (16-bit computed in float, double in double).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

namespace {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

constexpr int kThreads = 256;
constexpr int64_t kChunk = 8192;

template <int D, typename T>
__device__ __forceinline__ T phi(T u) {
  if constexpr (D == 0) return u < T(0) ? -u : u;
  else return T(0.5) * u * u;
}
template <int D, typename T>
__device__ __forceinline__ T dphi(T u) {
  if constexpr (D == 0) return T(u > T(0)) - T(u < T(0));
  else return u;
}

// Block-wide sum of K values per thread; result valid in thread 0.
template <int K, typename T>
__device__ __forceinline__ void block_sum(T (&v)[K]) {
  __shared__ T sh[K][kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], o);
    if (lane == 0) sh[k][warp] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      v[k] = lane < kThreads / 32 ? sh[k][lane] : T(0);
      for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], o);
    }
  }
}

template <int D, typename scalar_t>
__global__ void ils_fwd_kernel(const scalar_t* __restrict__ F, const scalar_t* __restrict__ B,
                               const scalar_t* __restrict__ M, const int64_t* __restrict__ P1,
                               const int64_t* __restrict__ P2, typename Acc<scalar_t>::type* __restrict__ PART,
                               int64_t C, int64_t HW, int64_t T) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t t = blockIdx.x, n = blockIdx.y;
  const int64_t Dn = C * HW;
  const int64_t p1 = P1[n], p2 = P2[n];
  acc_t a[4] = {0, 0, 0, 0};
  const int64_t d0 = t * kChunk, d1 = min(Dn, d0 + kChunk);
  for (int64_t d = d0 + threadIdx.x; d < d1; d += kThreads) {
    const int64_t i = d % HW;
    const acc_t m = static_cast<acc_t>(M[n * HW + i]), f = static_cast<acc_t>(F[n * Dn + d]),
                b = static_cast<acc_t>(B[n * Dn + d]);
    const acc_t mb1 = static_cast<acc_t>(M[p1 * HW + i]), bb1 = static_cast<acc_t>(B[p1 * Dn + d]);
    const acc_t mf2 = acc_t(1) - static_cast<acc_t>(M[p2 * HW + i]), ff2 = static_cast<acc_t>(F[p2 * Dn + d]);
    const acc_t om = acc_t(1) - m;
    const acc_t y1 = m * f, x1 = m * b, x2 = om * f, y2 = om * b;
    a[0] += phi<D>(x1 - y1);
    a[1] += phi<D>(mb1 * bb1 - y1);
    a[2] += phi<D>(x2 - y2);
    a[3] += phi<D>(mf2 * ff2 - y2);
  }
  block_sum<4>(a);
  if (threadIdx.x == 0) {
    acc_t* o = PART + (n * T + t) * 4;
    o[0] = a[0]; o[1] = a[1]; o[2] = a[2]; o[3] = a[3];
  }
}

template <int D, typename scalar_t>
__global__ void ils_bwd_kernel(const typename Acc<scalar_t>::type* __restrict__ G, const scalar_t* __restrict__ F,
                               const scalar_t* __restrict__ B, const scalar_t* __restrict__ M,
                               const int64_t* __restrict__ P1, const int64_t* __restrict__ P2,
                               const int64_t* __restrict__ Q1, const int64_t* __restrict__ Q2,
                               scalar_t* __restrict__ GF, scalar_t* __restrict__ GB, scalar_t* __restrict__ GM,
                               int64_t C, int64_t HW) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t j = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= HW) return;
  const int64_t Dn = C * HW;
  const int64_t p1 = P1[j], p2 = P2[j], q1 = Q1[j], q2 = Q2[j];
  const acc_t g0 = G[4 * j], g1 = G[4 * j + 1], g2 = G[4 * j + 2], g3 = G[4 * j + 3];  // scaled by 1/(C*H*W)
  const acc_t h1 = G[4 * q1 + 1], h3 = G[4 * q2 + 3];
  const acc_t m = static_cast<acc_t>(M[j * HW + i]), om = acc_t(1) - m;
  const acc_t mp1 = static_cast<acc_t>(M[p1 * HW + i]), mq1 = static_cast<acc_t>(M[q1 * HW + i]);
  const acc_t omp2 = acc_t(1) - static_cast<acc_t>(M[p2 * HW + i]);
  const acc_t omq2 = acc_t(1) - static_cast<acc_t>(M[q2 * HW + i]);
  acc_t gm = 0;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t off = c * HW + i;
    const acc_t f = static_cast<acc_t>(F[j * Dn + off]), b = static_cast<acc_t>(B[j * Dn + off]);
    const acc_t bp1 = static_cast<acc_t>(B[p1 * Dn + off]), fq1 = static_cast<acc_t>(F[q1 * Dn + off]);
    const acc_t fp2 = static_cast<acc_t>(F[p2 * Dn + off]), bq2 = static_cast<acc_t>(B[q2 * Dn + off]);
    const acc_t y1 = m * f, x1 = m * b, x2 = om * f, y2 = om * b;
    const acc_t d0 = g0 * dphi<D>(x1 - y1);
    const acc_t d1 = g1 * dphi<D>(mp1 * bp1 - y1);
    const acc_t e1 = h1 * dphi<D>(x1 - mq1 * fq1);
    const acc_t d2 = g2 * dphi<D>(x2 - y2);
    const acc_t d3 = g3 * dphi<D>(omp2 * fp2 - y2);
    const acc_t e3 = h3 * dphi<D>(x2 - omq2 * bq2);
    const acc_t gf = m * (-d0 - d1) + om * (d2 + e3);
    const acc_t gb = m * (d0 + e1) - om * (d2 + d3);
    gm += d0 * (b - f) - d1 * f + e1 * b - d2 * (f - b) + d3 * b - e3 * f;
    GF[j * Dn + off] = static_cast<scalar_t>(fabs(double(f)) < 1.0 ? gf : acc_t(0));
    GB[j * Dn + off] = static_cast<scalar_t>(fabs(double(b)) < 1.0 ? gb : acc_t(0));
  }
  GM[j * HW + i] = static_cast<scalar_t>(gm);
}

template <typename scalar_t>
__global__ void mask_fwd_kernel(const scalar_t* __restrict__ M, typename Acc<scalar_t>::type* __restrict__ PART,
                                int64_t Dn, int64_t T) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t t = blockIdx.x, n = blockIdx.y;
  acc_t a[2] = {0, 0};
  const int64_t d0 = t * kChunk, d1 = min(Dn, d0 + kChunk);
  for (int64_t d = d0 + threadIdx.x; d < d1; d += kThreads) {
    const acc_t v = static_cast<acc_t>(M[n * Dn + d]);
    a[0] += v < acc_t(1) - v ? v : acc_t(1) - v;
    a[1] += v;
  }
  block_sum<2>(a);
  if (threadIdx.x == 0) {
    PART[(n * T + t) * 2] = a[0];
    PART[(n * T + t) * 2 + 1] = a[1];
  }
}

template <typename scalar_t>
__global__ void mask_bwd_kernel(const typename Acc<scalar_t>::type* __restrict__ G, const scalar_t* __restrict__ M,
                                scalar_t* __restrict__ GM, int64_t Dn) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t n = blockIdx.y;
  const int64_t d = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= Dn) return;
  const acc_t g0 = G[2 * n], g1 = G[2 * n + 1];
  const acc_t v = static_cast<acc_t>(M[n * Dn + d]);
  const acc_t s = acc_t(v < acc_t(0.5)) - acc_t(v > acc_t(0.5));
  GM[n * Dn + d] = static_cast<scalar_t>(g0 * s + g1);
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_fbm(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m) {
  TORCH_CHECK(f.dim() == 4 && b.sizes() == f.sizes(), "ils_terms: f, b must be [N,C,H,W] of one shape");
  TORCH_CHECK(m.dim() == 4 && m.size(0) == f.size(0) && m.size(1) == 1 && m.size(2) == f.size(2) &&
                  m.size(3) == f.size(3),
              "ils_terms: m must be [N,1,H,W]");
  TORCH_CHECK(f.is_contiguous() && b.is_contiguous() && m.is_contiguous(), "ils_terms: f, b, m must be contiguous");
  TORCH_CHECK(b.scalar_type() == f.scalar_type() && m.scalar_type() == f.scalar_type(),
              "ils_terms: f, b, m must share one dtype");
  TORCH_CHECK(f.is_cuda() && b.device() == f.device() && m.device() == f.device(),
              "ils_terms: f, b, m must be CUDA tensors on one device");
  TORCH_CHECK(f.size(0) <= 65535, "ils_terms: batch must be <= 65535 on the cuda backend");
}

void check_perm(const at::Tensor& p, const at::Tensor& f, const char* name) {
  TORCH_CHECK(p.scalar_type() == at::kLong && p.dim() == 1 && p.size(0) == f.size(0) && p.is_contiguous() &&
                  p.device() == f.device(),
              "ils_terms: ", name, " must be a contiguous int64 tensor [N] on f's device");
}

at::Tensor ils_terms_fwd(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m, const at::Tensor& perm1,
                         const at::Tensor& perm2, int64_t dist) {
  check_fbm(f, b, m);
  check_perm(perm1, f, "perm1");
  check_perm(perm2, f, "perm2");
  TORCH_CHECK(dist == 0 || dist == 1, "ils_terms: dist must be 0 (laplace) or 1 (gaussian)");
  const c10::cuda::CUDAGuard guard(f.device());
  const int64_t N = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3), Dn = C * HW;
  const auto odt = acc_type(f.scalar_type());
  if (f.numel() == 0) return at::zeros({N, 4}, f.options().dtype(odt));
  const int64_t T = (Dn + kChunk - 1) / kChunk;
  TORCH_CHECK(T <= 2147483647, "ils_terms: tensor too large");
  auto part = at::empty({N, T, 4}, f.options().dtype(odt));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "ils_terms_fwd_cuda", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    auto kern = dist == 0 ? ils_fwd_kernel<0, scalar_t> : ils_fwd_kernel<1, scalar_t>;
    kern<<<dim3(unsigned(T), unsigned(N)), kThreads, 0, stream>>>(
        f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), perm1.data_ptr<int64_t>(),
        perm2.data_ptr<int64_t>(), part.data_ptr<acc_t>(), C, HW, T);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return (part.to(at::kDouble).sum(1) / double(Dn)).to(odt);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ils_terms_bwd(const at::Tensor& g, const at::Tensor& f,
                                                             const at::Tensor& b, const at::Tensor& m,
                                                             const at::Tensor& perm1, const at::Tensor& perm2,
                                                             const at::Tensor& inv1, const at::Tensor& inv2,
                                                             int64_t dist) {
  check_fbm(f, b, m);
  check_perm(perm1, f, "perm1");
  check_perm(perm2, f, "perm2");
  check_perm(inv1, f, "inv1");
  check_perm(inv2, f, "inv2");
  TORCH_CHECK(dist == 0 || dist == 1, "ils_terms: dist must be 0 (laplace) or 1 (gaussian)");
  const int64_t N = f.size(0), C = f.size(1), HW = f.size(2) * f.size(3), Dn = C * HW;
  const auto odt = acc_type(f.scalar_type());
  TORCH_CHECK(g.dim() == 2 && g.size(0) == N && g.size(1) == 4 && g.device() == f.device(),
              "ils_terms_bwd: g must be [N,4] on f's device");
  const c10::cuda::CUDAGuard guard(f.device());
  auto gf = at::empty_like(f, at::MemoryFormat::Contiguous);
  auto gb = at::empty_like(b, at::MemoryFormat::Contiguous);
  auto gm = at::empty_like(m, at::MemoryFormat::Contiguous);
  if (f.numel() == 0) return {gf, gb, gm.zero_()};
  auto gk = (g.to(at::kDouble) / double(Dn)).to(odt).contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(unsigned((HW + kThreads - 1) / kThreads), unsigned(N));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "ils_terms_bwd_cuda", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    auto kern = dist == 0 ? ils_bwd_kernel<0, scalar_t> : ils_bwd_kernel<1, scalar_t>;
    kern<<<grid, kThreads, 0, stream>>>(gk.data_ptr<acc_t>(), f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                                        m.data_ptr<scalar_t>(), perm1.data_ptr<int64_t>(), perm2.data_ptr<int64_t>(),
                                        inv1.data_ptr<int64_t>(), inv2.data_ptr<int64_t>(), gf.data_ptr<scalar_t>(),
                                        gb.data_ptr<scalar_t>(), gm.data_ptr<scalar_t>(), C, HW);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {gf, gb, gm};
}

at::Tensor mask_terms_fwd(const at::Tensor& m) {
  TORCH_CHECK(m.dim() == 4 && m.is_contiguous() && m.is_cuda(), "mask_terms: m must be a contiguous 4-D CUDA tensor");
  TORCH_CHECK(m.size(0) <= 65535, "mask_terms: batch must be <= 65535 on the cuda backend");
  const c10::cuda::CUDAGuard guard(m.device());
  const int64_t N = m.size(0), Dn = m.numel() / std::max<int64_t>(1, N);
  const auto odt = acc_type(m.scalar_type());
  if (m.numel() == 0) return at::zeros({N, 2}, m.options().dtype(odt));
  const int64_t T = (Dn + kChunk - 1) / kChunk;
  auto part = at::empty({N, T, 2}, m.options().dtype(odt));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "mask_terms_fwd_cuda", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    mask_fwd_kernel<scalar_t><<<dim3(unsigned(T), unsigned(N)), kThreads, 0, stream>>>(
        m.data_ptr<scalar_t>(), part.data_ptr<acc_t>(), Dn, T);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return (part.to(at::kDouble).sum(1) / double(Dn)).to(odt);
}

at::Tensor mask_terms_bwd(const at::Tensor& g, const at::Tensor& m) {
  TORCH_CHECK(m.dim() == 4 && m.is_contiguous() && m.is_cuda(), "mask_terms: m must be a contiguous 4-D CUDA tensor");
  const int64_t N = m.size(0), Dn = m.numel() / std::max<int64_t>(1, N);
  TORCH_CHECK(g.dim() == 2 && g.size(0) == N && g.size(1) == 2 && g.device() == m.device(),
              "mask_terms_bwd: g must be [N,2] on m's device");
  const c10::cuda::CUDAGuard guard(m.device());
  auto gm = at::empty_like(m, at::MemoryFormat::Contiguous);
  if (m.numel() == 0) return gm;
  const auto odt = acc_type(m.scalar_type());
  auto gk = (g.to(at::kDouble) / double(Dn)).to(odt).contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(unsigned((Dn + kThreads - 1) / kThreads), unsigned(N));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "mask_terms_bwd_cuda", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    mask_bwd_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(gk.data_ptr<acc_t>(), m.data_ptr<scalar_t>(),
                                                             gm.data_ptr<scalar_t>(), Dn);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gm;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cuda, m) {
  m.def("ils_terms_fwd(Tensor f, Tensor b, Tensor m, Tensor perm1, Tensor perm2, int dist) -> Tensor", &ils_terms_fwd);
  m.def("ils_terms_bwd(Tensor g, Tensor f, Tensor b, Tensor m, Tensor perm1, Tensor perm2, Tensor inv1, Tensor inv2, "
        "int dist) -> (Tensor, Tensor, Tensor)",
        &ils_terms_bwd);
  m.def("mask_terms_fwd(Tensor m) -> Tensor", &mask_terms_fwd);
  m.def("mask_terms_bwd(Tensor g, Tensor m) -> Tensor", &mask_terms_bwd);
}
