// upfirdn2d on CUDA (NVlabs StyleGAN2-ADA semantics; see ilsgan/ops/_upfirdn2d.py).
//
//   y[oy, ox] = sum_{ky, kx} w[ky, kx] * u[oy*downy + ky - py0, ox*downx + kx - px0]
//
// u: the input with (up-1) zeros after each pixel (never formed); w: the effective filter (flipped
// for a true convolution, times gain, a separable filter as its outer product), prepared on the
// host side in the compute type (float for half/bfloat16/float, double for double).
//
// One block computes a TH x TW tile of outputs of one plane (gridDim.z strides over the N*C
// planes): it stages the input window the tile needs (converted to the compute type, zero outside
// the image) and the filter in shared memory, then each thread computes outputs polyphase: only
// taps k = k0 + t*up with k0 = (-s) mod up (s = o*down - p0) hit a non-zero of u. Hot cases
// (up=2 / down=2 / up=down=1 with a 4x4 filter, both axes) are template instances with
// compile-time factors, filter size and tile, so the tap loops unroll; everything else runs the
// generic instance with runtime values.
#include <torch/extension.h>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace {

struct Params {
  int H, W, OH, OW;
  int upx, upy, downx, downy, fw, fh;
  int px0, py0;
  int th, tw;        // output tile
  int in_th, in_tw;  // staged input window
  long long planes;
};

__device__ __forceinline__ int floordiv_d(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int posmod_d(int a, int b) {
  int r = a % b;
  return r < 0 ? r + b : r;
}

// UP, DOWN, FT (filter taps per axis) and TILE > 0: compile-time, same on both axes; 0: runtime.
template <typename scalar_t, typename acc_t, int UP, int DOWN, int FT, int TILE>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ wf,
                                 scalar_t* __restrict__ y, Params p) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int upx = UP > 0 ? UP : p.upx, upy = UP > 0 ? UP : p.upy;
  const int downx = DOWN > 0 ? DOWN : p.downx, downy = DOWN > 0 ? DOWN : p.downy;
  const int fw = FT > 0 ? FT : p.fw, fh = FT > 0 ? FT : p.fh;
  const int th = TILE > 0 ? TILE : p.th, tw = TILE > 0 ? TILE : p.tw;
  const int in_th = p.in_th, in_tw = p.in_tw;
  acc_t* sw = smem;                      // filter, fh*fw
  acc_t* sx = smem + ((fh * fw + 3) & ~3);  // input window, in_th*in_tw

  for (int i = threadIdx.x; i < fh * fw; i += blockDim.x) sw[i] = wf[i];

  const int oy0 = blockIdx.y * th, ox0 = blockIdx.x * tw;
  const int iy_start = floordiv_d(oy0 * downy - p.py0, upy);
  const int ix_start = floordiv_d(ox0 * downx - p.px0, upx);

  for (long long plane = blockIdx.z; plane < p.planes; plane += gridDim.z) {
    const scalar_t* xp = x + plane * (long long)p.H * p.W;
    scalar_t* yp = y + plane * (long long)p.OH * p.OW;
    __syncthreads();  // previous plane's reads of sx are done
    for (int i = threadIdx.x; i < in_th * in_tw; i += blockDim.x) {
      const int ly = i / in_tw, lx = i - ly * in_tw;
      const int iy = iy_start + ly, ix = ix_start + lx;
      acc_t v = acc_t(0);
      if (iy >= 0 && iy < p.H && ix >= 0 && ix < p.W) v = static_cast<acc_t>(xp[(long long)iy * p.W + ix]);
      sx[i] = v;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < th * tw; i += blockDim.x) {
      const int ty = i / tw, tx = i - ty * tw;
      const int oy = oy0 + ty, ox = ox0 + tx;
      if (oy >= p.OH || ox >= p.OW) continue;
      const int sy = oy * downy - p.py0, sxx = ox * downx - p.px0;
      const int k0y = posmod_d(-sy, upy), k0x = posmod_d(-sxx, upx);
      const int ly0 = (sy + k0y) / upy - iy_start;
      const int lx0 = (sxx + k0x) / upx - ix_start;
      acc_t acc = acc_t(0);
      if constexpr (FT > 0 && UP > 0) {
#pragma unroll
        for (int t = 0; t < (FT + UP - 1) / UP; ++t) {
          const int ky = k0y + t * UP;
          if (ky < FT) {
#pragma unroll
            for (int u = 0; u < (FT + UP - 1) / UP; ++u) {
              const int kx = k0x + u * UP;
              if (kx < FT) acc += sw[ky * FT + kx] * sx[(ly0 + t) * in_tw + lx0 + u];
            }
          }
        }
      } else {
        int ly = ly0;
        for (int ky = k0y; ky < fh; ky += upy, ++ly) {
          int lx = lx0;
          const acc_t* srow = sx + ly * in_tw;
          const acc_t* wrow = sw + ky * fw;
          for (int kx = k0x; kx < fw; kx += upx, ++lx) acc += wrow[kx] * srow[lx];
        }
      }
      yp[(long long)oy * p.OW + ox] = static_cast<scalar_t>(acc);
    }
  }
}

template <typename scalar_t, typename acc_t, int UP, int DOWN, int FT, int TILE>
void launch(const at::Tensor& x, const at::Tensor& wf, at::Tensor& y, Params p) {
  const int fh = p.fh, fw = p.fw;
  const size_t smem = (size_t)(((fh * fw + 3) & ~3) + p.in_th * p.in_tw) * sizeof(acc_t);
  dim3 grid((p.OW + p.tw - 1) / p.tw, (p.OH + p.th - 1) / p.th, (unsigned)std::min<long long>(p.planes, 65535));
  TORCH_CHECK(grid.y <= 65535, "upfirdn2d (cuda): output too tall");
  const int threads = 256;
  auto stream = at::cuda::getCurrentCUDAStream();
  upfirdn2d_kernel<scalar_t, acc_t, UP, DOWN, FT, TILE><<<grid, threads, smem, stream>>>(
      x.data_ptr<scalar_t>(), wf.data_ptr<acc_t>(), y.data_ptr<scalar_t>(), p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool flip_filter,
                          double gain) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d (cuda): x must be a CUDA tensor");
  TORCH_CHECK(f.device() == x.device(), "upfirdn2d (cuda): f must be on x's device");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d (cuda): x must be 4-D [N, C, H, W]");
  TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "upfirdn2d (cuda): f must be 1-D or 2-D");
  TORCH_CHECK(f.scalar_type() == at::kFloat, "upfirdn2d (cuda): f must be float32");
  TORCH_CHECK(f.numel() > 0, "upfirdn2d (cuda): f must not be empty");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d (cuda): up and down must be >= 1");
  TORCH_CHECK(upx <= 64 && upy <= 64 && downx <= 64 && downy <= 64, "upfirdn2d (cuda): factors > 64 not supported");
  TORCH_CHECK(x.size(2) >= 1 && x.size(3) >= 1, "upfirdn2d (cuda): x must have a non-empty height and width");
  TORCH_CHECK(x.size(2) * upy < (1LL << 30) && x.size(3) * upx < (1LL << 30), "upfirdn2d (cuda): x too large");
  const at::cuda::CUDAGuard guard(x.device());
  const int fw = (int)f.size(-1), fh = (int)f.size(0);
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t OH = (H * upy + py0 + py1 - fh + downy) / downy;
  const int64_t OW = (W * upx + px0 + px1 - fw + downx) / downx;
  TORCH_CHECK(H * upy + py0 + py1 - fh >= 0 && W * upx + px0 + px1 - fw >= 0 && OH >= 1 && OW >= 1,
              "upfirdn2d (cuda): the output would be smaller than 1x1");

  at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({x.size(0), x.size(1), OH, OW}, x.options());
  if (y.numel() == 0) return y;
  at::Tensor wd = f.to(at::kDouble);
  if (wd.dim() == 1) wd = at::outer(wd, wd);
  if (!flip_filter) wd = wd.flip({0, 1});
  wd = wd * gain;

  Params p;
  p.H = (int)H; p.W = (int)W; p.OH = (int)OH; p.OW = (int)OW;
  p.upx = (int)upx; p.upy = (int)upy; p.downx = (int)downx; p.downy = (int)downy;
  p.fw = fw; p.fh = fh; p.px0 = (int)px0; p.py0 = (int)py0;
  p.planes = x.size(0) * x.size(1);

  const bool sym = upx == upy && downx == downy && fw == fh && fw == 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor wf = wd.to(std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat).contiguous();
    auto window = [&](int t, int down, int ft, int up) { return ((t - 1) * down + ft - 1) / up + 2; };
    auto set_tile = [&](int t) {
      p.th = p.tw = t;
      p.in_th = window(t, p.downy, fh, p.upy);
      p.in_tw = window(t, p.downx, fw, p.upx);
    };
    if (sym && upx == 2 && downx == 1) {
      set_tile(32);
      launch<scalar_t, acc_t, 2, 1, 4, 32>(xc, wf, y, p);
    } else if (sym && upx == 1 && downx == 2) {
      set_tile(32);
      launch<scalar_t, acc_t, 1, 2, 4, 32>(xc, wf, y, p);
    } else if (sym && upx == 1 && downx == 1) {
      set_tile(32);
      launch<scalar_t, acc_t, 1, 1, 4, 32>(xc, wf, y, p);
    } else {
      int t = 32;
      for (;; t /= 2) {
        set_tile(t);
        const size_t bytes = (size_t)(((fh * fw + 3) & ~3) + p.in_th * p.in_tw) * sizeof(acc_t);
        if (bytes <= 48 * 1024 || t == 1) break;
      }
      const size_t bytes = (size_t)(((fh * fw + 3) & ~3) + p.in_th * p.in_tw) * sizeof(acc_t);
      TORCH_CHECK(bytes <= 48 * 1024, "upfirdn2d (cuda): filter or factors too large for the shared-memory tile");
      launch<scalar_t, acc_t, 0, 0, 0, 0>(xc, wf, y, p);
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cuda, m) {
  m.def(
      "upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int px0, int px1, int py0, int py1, "
      "bool flip_filter, float gain) -> Tensor",
      &upfirdn2d_cuda);
}
