// Layer compositing on CUDA: out = ms*fs + (1-ms)*b with f, m translated per sample by an integer
// (tx, ty) with zero fill (fs[y][x] = f[y-ty][x-tx]); shifted reads are predicated loads at the
// translated address: no shifted copy is materialized. Grid (cdiv(H*W, 256), N): one thread per
// pixel of one sample, looping over the channels (the mask and the shifted address are computed
// once per pixel; consecutive threads touch consecutive addresses). The backward computes, for the
// same pixel index, gb at the output position and gf, gm at the input position (adjoint shift),
// gm summed over the channels in a register: one pass, no atomics. Contiguous NCHW inputs;
// float, double, half, bfloat16 (half/bfloat16 computed in float).
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

template <typename scalar_t>
__global__ void composite_fwd_kernel(const scalar_t* __restrict__ F, const scalar_t* __restrict__ B,
                                     const scalar_t* __restrict__ M, const int64_t* __restrict__ S,
                                     scalar_t* __restrict__ O, scalar_t* __restrict__ MS, int64_t C, int64_t H,
                                     int64_t W) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t HW = H * W;
  const int64_t n = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= HW) return;
  int64_t src = i;
  bool valid = true;
  if (S != nullptr) {
    const int64_t tx = S[2 * n], ty = S[2 * n + 1];
    const int64_t y = i / W, x = i - y * W;
    const int64_t sy = y - ty, sx = x - tx;
    valid = sy >= 0 && sy < H && sx >= 0 && sx < W;
    src = sy * W + sx;
  }
  const acc_t ms = valid ? static_cast<acc_t>(M[n * HW + src]) : acc_t(0);
  if (MS != nullptr) MS[n * HW + i] = static_cast<scalar_t>(ms);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t base = (n * C + c) * HW;
    const acc_t fv = valid ? static_cast<acc_t>(F[base + src]) : acc_t(0);
    const acc_t bv = static_cast<acc_t>(B[base + i]);
    O[base + i] = static_cast<scalar_t>(ms * fv + (acc_t(1) - ms) * bv);
  }
}

template <typename scalar_t>
__global__ void composite_bwd_kernel(const scalar_t* __restrict__ GO, const scalar_t* __restrict__ GMS,
                                     const scalar_t* __restrict__ F, const scalar_t* __restrict__ B,
                                     const scalar_t* __restrict__ M, const int64_t* __restrict__ S,
                                     scalar_t* __restrict__ GF, scalar_t* __restrict__ GB, scalar_t* __restrict__ GM,
                                     int64_t C, int64_t H, int64_t W) {
  using acc_t = typename Acc<scalar_t>::type;
  const int64_t HW = H * W;
  const int64_t n = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= HW) return;
  int64_t src = i, dst = i;
  bool v_in = true, v_out = true;
  if (S != nullptr) {
    const int64_t tx = S[2 * n], ty = S[2 * n + 1];
    const int64_t y = i / W, x = i - y * W;
    const int64_t sy = y - ty, sx = x - tx, oy = y + ty, ox = x + tx;
    v_in = sy >= 0 && sy < H && sx >= 0 && sx < W;
    v_out = oy >= 0 && oy < H && ox >= 0 && ox < W;
    src = sy * W + sx;
    dst = oy * W + ox;
  }
  const acc_t ms = v_in ? static_cast<acc_t>(M[n * HW + src]) : acc_t(0);
  const acc_t mi = static_cast<acc_t>(M[n * HW + i]);
  acc_t gm = (GMS != nullptr && v_out) ? static_cast<acc_t>(GMS[n * HW + dst]) : acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t base = (n * C + c) * HW;
    const acc_t g_o = static_cast<acc_t>(GO[base + i]);
    GB[base + i] = static_cast<scalar_t>(g_o * (acc_t(1) - ms));
    if (v_out) {
      const acc_t g_t = static_cast<acc_t>(GO[base + dst]);
      const acc_t b_t = static_cast<acc_t>(B[base + dst]);
      const acc_t f_i = static_cast<acc_t>(F[base + i]);
      GF[base + i] = static_cast<scalar_t>(g_t * mi);
      gm += g_t * f_i - g_t * b_t;
    } else {
      GF[base + i] = scalar_t(0);
    }
  }
  GM[n * HW + i] = static_cast<scalar_t>(gm);
}

void check_inputs(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m,
                  const c10::optional<at::Tensor>& shift) {
  TORCH_CHECK(f.dim() == 4, "composite: f must be 4-D [N,C,H,W]");
  TORCH_CHECK(b.sizes() == f.sizes(), "composite: b must have the shape of f");
  TORCH_CHECK(m.dim() == 4 && m.size(0) == f.size(0) && m.size(1) == 1 && m.size(2) == f.size(2) &&
                  m.size(3) == f.size(3),
              "composite: m must be [N,1,H,W]");
  TORCH_CHECK(f.is_contiguous() && b.is_contiguous() && m.is_contiguous(), "composite: f, b, m must be contiguous");
  TORCH_CHECK(b.scalar_type() == f.scalar_type() && m.scalar_type() == f.scalar_type(),
              "composite: f, b, m must share one dtype");
  TORCH_CHECK(f.is_cuda() && b.device() == f.device() && m.device() == f.device(),
              "composite: f, b, m must be CUDA tensors on one device");
  TORCH_CHECK(f.size(0) <= 65535, "composite: batch must be <= 65535 on the cuda backend");
  if (shift.has_value()) {
    const auto& s = *shift;
    TORCH_CHECK(s.scalar_type() == at::kLong && s.dim() == 2 && s.size(0) == f.size(0) && s.size(1) == 2 &&
                    s.is_contiguous() && s.device() == f.device(),
                "composite: shift must be a contiguous int64 tensor [N,2] on f's device");
  }
}

std::tuple<at::Tensor, at::Tensor> composite_fwd(const at::Tensor& f, const at::Tensor& b, const at::Tensor& m,
                                                 const c10::optional<at::Tensor>& shift) {
  check_inputs(f, b, m, shift);
  const c10::cuda::CUDAGuard guard(f.device());
  auto out = at::empty_like(f, at::MemoryFormat::Contiguous);
  auto ms = shift.has_value() ? at::empty_like(m, at::MemoryFormat::Contiguous) : at::empty({0}, m.options());
  const int64_t N = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  if (f.numel() == 0) return {out, ms};
  const dim3 grid(unsigned((H * W + kThreads - 1) / kThreads), unsigned(N));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "composite_fwd_cuda", [&] {
    composite_fwd_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        f.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(),
        shift.has_value() ? shift->data_ptr<int64_t>() : nullptr, out.data_ptr<scalar_t>(),
        shift.has_value() ? ms.data_ptr<scalar_t>() : nullptr, C, H, W);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, ms};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_bwd(const at::Tensor& go, const c10::optional<at::Tensor>& gms,
                                                             const at::Tensor& f, const at::Tensor& b,
                                                             const at::Tensor& m,
                                                             const c10::optional<at::Tensor>& shift) {
  check_inputs(f, b, m, shift);
  TORCH_CHECK(go.sizes() == f.sizes() && go.is_contiguous() && go.scalar_type() == f.scalar_type() &&
                  go.device() == f.device(),
              "composite_bwd: go must be contiguous, with f's shape, dtype and device");
  if (gms.has_value()) {
    TORCH_CHECK(gms->sizes() == m.sizes() && gms->is_contiguous() && gms->scalar_type() == f.scalar_type() &&
                    gms->device() == f.device(),
                "composite_bwd: gms must be contiguous, with m's shape, dtype and device");
  }
  const c10::cuda::CUDAGuard guard(f.device());
  auto gf = at::empty_like(f, at::MemoryFormat::Contiguous);
  auto gb = at::empty_like(b, at::MemoryFormat::Contiguous);
  auto gm = at::empty_like(m, at::MemoryFormat::Contiguous);
  const int64_t N = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  if (f.numel() == 0) return {gf, gb, gm.zero_()};
  const dim3 grid(unsigned((H * W + kThreads - 1) / kThreads), unsigned(N));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "composite_bwd_cuda", [&] {
    composite_bwd_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        go.data_ptr<scalar_t>(), gms.has_value() ? gms->data_ptr<scalar_t>() : nullptr, f.data_ptr<scalar_t>(),
        b.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), shift.has_value() ? shift->data_ptr<int64_t>() : nullptr,
        gf.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), gm.data_ptr<scalar_t>(), C, H, W);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {gf, gb, gm};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cuda, m) {
  m.def("composite_fwd(Tensor f, Tensor b, Tensor m, Tensor? shift) -> (Tensor, Tensor)", &composite_fwd);
  m.def("composite_bwd(Tensor go, Tensor? gms, Tensor f, Tensor b, Tensor m, Tensor? shift) -> (Tensor, Tensor, Tensor)",
        &composite_bwd);
}
