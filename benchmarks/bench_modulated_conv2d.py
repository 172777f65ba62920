"""modulated_conv2d on every synthesis-layer shape of the 64x64 and 128x128 ILSGAN presets (batch 32),
forward and forward+backward, as a whole layer (modulated conv + noise + bias + lrelu + gain + clamp,
or ToRGB: 1x1, no demodulation, bias, clamp).

impls: ``ref`` (our plain-torch path), ``compile`` (torch.compile of ref), ``nvlabs_grouped`` (ref with
``fused_modconv=True``: NVlabs per-sample weights + grouped conv, then plain-torch bias_act),
``nvlabs_fma`` (ref with ``fused_modconv=False``: NVlabs scale -> shared conv -> fma(d, noise), then
plain-torch bias_act), the fast backends of the device
(``cpu``; ``cuda``, ``triton`` on a GPU), and ``conv_only``: torch's convolution of the layer alone
(shared weight, no modulation, no epilogue; gradients w.r.t. x and the weight), the floor of any
implementation that runs torch's conv, so ``nvlabs_fma / conv_only`` bounds what fusing the rest can
gain. On CPU everything runs in float32; on a GPU the layers at
16 px and above run in float16 with clamp 256 (NVlabs mixed precision: fp32 weights/styles).

Shapes (channels ``min(16384/res, 256)``): ``conv<C>@R`` (3x3, C->C at R), ``up<Ci>-<Co>@R`` (3x3
transposed stride-2 conv + [1,3,3,1] FIR, Ci at R/2 -> Co at R), ``torgb<C>@R`` (1x1, C->4).
``ILSGAN_BENCH_SHAPES=all`` (default: a representative subset, the full set takes > 10 min on the
2-core CPU machine) and ``ILSGAN_BENCH_CL=1`` (channels_last inputs for every impl) select more.

``bytes``: what an ideal implementation moves besides the conv itself: fwd = read x + write y + the
weight; fwd+bwd = that + read dy, x, y-side state + write dx and dweight (~3x fwd).
"""

import math
import os

import pytest
import torch

from conftest import DEVICE, IMPLS as BASE_IMPLS, ON_GPU, compiled, impl_skip_reason, run

from ilsgan.ops import modulated_conv2d, setup_filter
from ilsgan.ops._modulated_conv2d import SPEC

N = 32
ALL_SHAPES = (
    [("conv", 256, 256, r) for r in (4, 8, 16, 32, 64)] + [("conv", 128, 128, 128)]
    + [("up", 256, 256, r) for r in (8, 16, 32, 64)] + [("up", 256, 128, 128)]
    + [("torgb", 256, 4, r) for r in (4, 8, 16, 32, 64)] + [("torgb", 128, 4, 128)]
)
SUBSET = [("conv", 256, 256, 8), ("conv", 256, 256, 32), ("conv", 256, 256, 64), ("conv", 128, 128, 128),
          ("up", 256, 256, 16), ("up", 256, 256, 64), ("torgb", 256, 4, 32), ("torgb", 128, 4, 128)]
SHAPES = ALL_SHAPES if (ON_GPU or os.environ.get("ILSGAN_BENCH_SHAPES") == "all") else SUBSET
CL = os.environ.get("ILSGAN_BENCH_CL") == "1"
IMPLS = ("ref", "compile", "nvlabs_grouped", "nvlabs_fma", "conv_only") + tuple(i for i in BASE_IMPLS if i not in ("ref", "compile"))


def shape_id(s):
    kind, ci, co, r = s
    name = f"conv{ci}@{r}" if kind == "conv" else (f"up{ci}-{co}@{r}" if kind == "up" else f"torgb{ci}@{r}")
    return name + ("/cl" if CL else "")


def _layer(shape):
    """(inputs, kwargs) of one synthesis layer, NVlabs conventions."""
    kind, ci, co, r = shape
    half = ON_GPU and r >= 16
    dtype = torch.float16 if half else torch.float32
    g = torch.Generator().manual_seed(0)
    rin = r // 2 if kind == "up" else r
    k = 1 if kind == "torgb" else 3
    x = torch.randn(N, ci, rin, rin, generator=g).to(DEVICE, dtype)
    if CL:
        x = x.contiguous(memory_format=torch.channels_last)
    inputs = dict(
        x=x,
        weight=(torch.randn(co, ci, k, k, generator=g) / math.sqrt(ci * k * k)).to(DEVICE),
        styles=(torch.randn(N, ci, generator=g) + 1).to(DEVICE),
        bias=(torch.randn(co, generator=g) * 0.1).to(DEVICE),
    )
    if kind == "torgb":
        kw = dict(demodulate=False, clamp=256.0 if half else None)
    else:
        inputs["noise"] = (torch.randn(N, 1, r, r, generator=g) * 0.1).to(DEVICE)
        kw = dict(padding=1, act="lrelu", gain=math.sqrt(2), clamp=256.0 if half else None,
                  flip_weight=(kind != "up"))
        if kind == "up":
            kw.update(up=2, resample_filter=setup_filter([1, 3, 3, 1], device=DEVICE))
    return inputs, kw


def _conv_only(x, weight, kind):
    weight = weight.to(x.dtype)
    if kind == "up":
        return torch.nn.functional.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=1, output_padding=1)
    return torch.nn.functional.conv2d(x, weight, padding=weight.shape[-1] // 2)


def _fn(impl, shape, kw):
    if impl == "conv_only":
        return lambda **t: _conv_only(t["x"], t["weight"], shape[0])
    if impl in ("nvlabs_grouped", "nvlabs_fma"):
        return lambda **t: modulated_conv2d(**t, **kw, impl="ref", fused_modconv=(impl == "nvlabs_grouped"))
    if impl == "compile":
        return compiled(("modulated_conv2d", shape, CL), lambda **t: modulated_conv2d(**t, **kw, impl="ref"))
    return lambda **t: modulated_conv2d(**t, **kw, impl=impl)


def _rounds(shape):
    if ON_GPU:
        return None
    kind, ci, co, r = shape
    work = ci * co * r * r * (9 if kind != "torgb" else 1)
    return max(2, min(10, int(4e8 / work)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_modulated_conv2d(benchmark, shape, kind, impl):
    if impl not in ("nvlabs_grouped", "nvlabs_fma", "conv_only"):
        reason = impl_skip_reason(SPEC, impl)
        if reason is not None:
            pytest.skip(reason)
    inputs, kw = _layer(shape)
    f = _fn(impl, shape, kw)
    x = inputs["x"]
    y_shape = (N, shape[2], shape[3], shape[3])
    n_x = x.numel() * x.element_size()
    n_y = math.prod(y_shape) * x.element_size()
    n_w = inputs["weight"].numel() * 4
    if kind == "fwd":
        def fn():
            with torch.no_grad():
                f(**inputs)
            if ON_GPU:
                torch.cuda.synchronize()
        nbytes = n_x + n_y + n_w
    else:
        leaves = {k: v.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
                  for k, v in inputs.items()}
        dy = torch.randn(y_shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, x.dtype)
        if CL:
            dy = dy.contiguous(memory_format=torch.channels_last)
        names = list(leaves)

        def fn():
            y = f(**leaves)
            torch.autograd.grad(y, [leaves[k] for k in names], dy, allow_unused=True)
            if ON_GPU:
                torch.cuda.synchronize()
        nbytes = 3 * (n_x + n_y) + 2 * n_w
    run(benchmark, fn, group=f"modulated_conv2d {kind} {shape_id(shape)}", impl=impl, bytes=nbytes,
        rounds=_rounds(shape))


def _interleaved(rounds: int = 3) -> None:
    """CPU A/B without pytest: per shape, NVlabs grouped, NVlabs fma, our fast backend and the conv
    alone alternate round by round (fwd+bwd), so that load from other processes hits all alike; medians."""
    import statistics
    import time

    fast = "cuda" if ON_GPU else "cpu"
    impls = ["nvlabs_grouped", "nvlabs_fma", fast, "conv_only"]
    print(f"{'shape':<16} " + " ".join(f"{i:>15}" for i in impls) + f"   best_nvlabs/{fast}  best_nvlabs/conv_only")
    for shape in SHAPES:
        inputs, kw = _layer(shape)
        leaves = {k: v.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
                  for k, v in inputs.items()}
        fns = {i: _fn(i, shape, kw) for i in impls}
        dy = torch.randn(N, shape[2], shape[3], shape[3]).to(DEVICE, inputs["x"].dtype)
        times = {i: [] for i in impls}
        for r in range(rounds + 1):
            for i in impls:
                t = time.perf_counter()
                y = fns[i](**leaves)
                torch.autograd.grad(y, list(leaves.values()), dy, allow_unused=True)
                if ON_GPU:
                    torch.cuda.synchronize()
                if r:
                    times[i].append(time.perf_counter() - t)
        med = {i: statistics.median(v) for i, v in times.items()}
        best = min(med["nvlabs_grouped"], med["nvlabs_fma"])
        print(f"{shape_id(shape):<16} " + " ".join(f"{med[i] * 1e3:>13.1f}ms" for i in impls)
              + f"   {best / med[fast]:>14.2f}x  {best / med['conv_only']:>20.2f}x", flush=True)


if __name__ == "__main__":  # python benchmarks/bench_modulated_conv2d.py [ROUNDS]
    import sys

    _interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
