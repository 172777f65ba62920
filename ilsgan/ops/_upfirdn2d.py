"""FIR up-sampling, filtering and down-sampling of images (NVlabs StyleGAN2-ADA ``upfirdn2d``).

Per channel, like ``scipy.signal.upfirdn`` in 2-D: (1) insert ``up - 1`` zeros after each pixel,
(2) pad by ``padding`` (relative to the up-sampled image; negative values crop), (3) convolve with
the FIR filter ``f`` ("valid" footprint; ``flip_filter=False`` is a true convolution, ``True`` a
correlation), (4) keep every ``down``-th pixel, (5) scale by ``gain``.

Backends: ``ref`` (the NVlabs reference: zero insertion, pad/crop and a depthwise ``conv2d``; any
order of gradients), ``cpu`` (C++ ``csrc/cpu/upfirdn2d.cpp``: polyphase, never builds the
zero-filled image, separable two-pass when the filter is 1-D or an exact outer product),
``cuda`` (``csrc/cuda/upfirdn2d.cu``: tiled shared-memory kernel) and ``triton``
(``kernels/upfirdn2d.py``). The fast backends are one ``torch.library`` custom op,
``ilsgan::upfirdn2d``, whose backward is the same op with ``up``/``down`` swapped, the filter
flipped and adjusted padding (NVlabs' formulas); so gradients of every order come from the same
kernel and ``torch.compile`` does not graph-break.

Memory format: the fast kernels work on contiguous NCHW planes; a channels_last input is converted
to NCHW for the kernel and the result converted back (the output keeps the input's format).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._dispatch import BACKENDS, OpSpec, kernels, register_op, resolve_backend
from ._extensions import memory_format_of
from ._validate import as_float, check_bool, check_filter, check_tensor, filter_size, parse_padding, parse_scaling

__all__ = ["upfirdn2d", "setup_filter", "filter2d", "upsample2d", "downsample2d", "SPEC"]


def _limits(backend: str, device_type: str, dtype: torch.dtype, huge: bool) -> Optional[str]:
    if dtype == torch.bfloat16 and backend == "triton" and device_type == "cpu":
        return "bfloat16 is handled by the triton backend on GPU only"
    return None


SPEC = register_op(OpSpec("upfirdn2d", BACKENDS, kernels=("upfirdn2d",), triton_module="upfirdn2d", limits=_limits))


def _out_size(h: int, w: int, fw: int, fh: int, upx, upy, downx, downy, px0, px1, py0, py1) -> Tuple[int, int]:
    oh = (h * upy + py0 + py1 - fh + downy) // downy
    ow = (w * upx + px0 + px1 - fw + downx) // downx
    return oh, ow


# ------------------------------------------------------------------------------------------------
# Reference (NVlabs ``_upfirdn2d_ref``): plain torch, differentiable to any order.


def _upfirdn2d_ref(x: Tensor, f: Optional[Tensor], upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    # Upsample by inserting zeros.
    x = x.reshape([n, c, h, 1, w, 1])
    x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([n, c, h * upy, w * upx])
    # Pad or crop.
    x = torch.nn.functional.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    # Filter: dtype, gain (split over the two passes of a separable filter), flip. (NVlabs scales
    # the float32 filter before the cast; scaling after it keeps float64 exact, same math.)
    # A negative gain with a separable filter (NVlabs: NaN) scales the first pass by its sign.
    f = f.to(x.dtype) * (abs(gain) ** (f.ndim / 2))
    sign = -1.0 if gain < 0 else 1.0
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    # Depthwise convolution.
    f = f[None, None].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = torch.nn.functional.conv2d(x, f * sign if sign < 0 else f, groups=c)
    else:
        x = torch.nn.functional.conv2d(x, (f * sign if sign < 0 else f).unsqueeze(2), groups=c)
        x = torch.nn.functional.conv2d(x, f.unsqueeze(3), groups=c)
    # Downsample by throwing away pixels.
    return x[:, :, ::downy, ::downx]


# ------------------------------------------------------------------------------------------------
# Fast backends: one custom op, its own backward. Kernel contract (every backend):
#   upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain) -> y
# x: contiguous NCHW (float16/bfloat16/float32/float64); f: contiguous float32 [taps] or [fh, fw]
# on x's device; y: contiguous NCHW of x's dtype.


@torch.library.custom_op("ilsgan::upfirdn2d", mutates_args=())
def _upfirdn2d_op(
    x: Tensor, f: Tensor, up: List[int], down: List[int], padding: List[int], flip_filter: bool, gain: float,
    backend: str,
) -> Tensor:
    fmt = memory_format_of(x)
    fw, fh = filter_size(f)
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, fw, fh, up[0], up[1], down[0], down[1], *padding)
    if x.numel() == 0:
        return x.new_empty([n, c, oh, ow]).contiguous(memory_format=fmt)
    y = kernels(SPEC, backend).upfirdn2d(x.contiguous(), f.contiguous(), up[0], up[1], down[0], down[1], padding[0],
                                         padding[1], padding[2], padding[3], flip_filter, gain)
    return y.contiguous(memory_format=fmt)


@_upfirdn2d_op.register_fake
def _(x, f, up, down, padding, flip_filter, gain, backend):
    fw, fh = filter_size(f)
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, fw, fh, up[0], up[1], down[0], down[1], *padding)
    return x.new_empty([n, c, oh, ow]).contiguous(memory_format=memory_format_of(x))


def _setup_context(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain, backend = inputs
    ctx.save_for_backward(f)
    ctx.args = (up, down, padding, flip_filter, gain, backend)
    ctx.x_hw = (x.shape[2], x.shape[3])


def _backward(ctx, dy):
    (f,) = ctx.saved_tensors
    up, down, padding, flip_filter, gain, backend = ctx.args
    if not ctx.needs_input_grad[0]:
        return (None,) * 8
    ih, iw = ctx.x_hw
    oh, ow = dy.shape[2], dy.shape[3]
    fw, fh = filter_size(f)
    upx, upy = up
    downx, downy = down
    px0, _, py0, _ = padding
    p = [
        fw - px0 - 1,
        iw * upx - ow * downx + px0 - upx + 1,
        fh - py0 - 1,
        ih * upy - oh * downy + py0 - upy + 1,
    ]
    dx = _upfirdn2d_op(dy, f, [downx, downy], [upx, upy], p, not flip_filter, gain, backend)
    return dx, None, None, None, None, None, None, None


_upfirdn2d_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------------------------
# Public API.

def upfirdn2d(
    x: Tensor,
    f: Optional[Tensor],
    up: Union[int, Sequence[int]] = 1,
    down: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int]] = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
    strict: Optional[bool] = None,
) -> Tensor:
    r"""Pad, up-sample, filter and down-sample a batch of 2-D images (NVlabs semantics).

    Per channel: insert ``up - 1`` zeros after each pixel, pad (crop where negative), convolve with
    ``f`` over its "valid" footprint, keep every ``down``-th pixel, multiply by ``gain``.

    Args:
        x: ``[N, C, H, W]``, float16/bfloat16/float32/float64 (bfloat16 not on triton-on-CPU);
            fp16/bf16 are computed in float32 by the fast backends. NCHW or channels_last; the
            output has the input's memory format (the fast kernels convert channels_last to NCHW
            and back).
        f: float32 filter, ``[fh, fw]`` (2-D), ``[taps]`` (separable: applied along x then y), or
            ``None`` (the 1x1 identity). Never differentiated (must not require grad); same device
            as ``x``. See :func:`setup_filter`.
        up: integer up-sampling factor, ``int`` or ``(x, y)``, >= 1.
        down: integer down-sampling factor, ``int`` or ``(x, y)``, >= 1.
        padding: ``int``, ``[px, py]`` or ``[px0, px1, py0, py1]`` (left, right, top, bottom), in
            pixels of the up-sampled image; negative values crop.
        flip_filter: False (default): true convolution (the filter is flipped); True: correlation.
        gain: overall scale; a 2-D filter is multiplied by ``gain``, each pass of a separable
            filter by ``sqrt(|gain|)`` (and the first pass by the sign of a negative gain).
        impl: ``"auto"``, ``"ref"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; a forced backend that
            cannot run raises :class:`ilsgan.ops.BackendUnavailableError`.
        strict: make a fallback of ``auto`` to ``ref`` an error (default: env ``ILSGAN_STRICT``).

    Returns:
        ``[N, C, OH, OW]`` with ``OH = (H*upy + py0 + py1 - fh + downy) // downy`` and
        ``OW = (W*upx + px0 + px1 - fw + downx) // downx`` (each must be >= 1). Differentiable
        with respect to ``x`` to any order.
    """
    op = "upfirdn2d"
    check_tensor(op, "x", x, 4)
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{op}: x must have a non-empty height and width, got shape {tuple(x.shape)}")
    check_filter(op, "f", f, x.device)
    upx, upy = parse_scaling(op, "up", up)
    downx, downy = parse_scaling(op, "down", down)
    px0, px1, py0, py1 = parse_padding(op, "padding", padding)
    flip_filter = check_bool(op, "flip_filter", flip_filter)
    gain = as_float(op, "gain", gain)
    fw, fh = filter_size(f)
    h, w = int(x.shape[2]), int(x.shape[3])
    oh, ow = _out_size(h, w, fw, fh, upx, upy, downx, downy, px0, px1, py0, py1)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: the output would be {oh}x{ow} (< 1x1): input {h}x{w}, up ({upx}, {upy}), "
            f"padding {[px0, px1, py0, py1]}, filter {fh}x{fw}, down ({downx}, {downy}); "
            "check padding / filter size"
        )

    backend = resolve_backend(op, impl, x.device.type, strict, x.dtype, False)
    if backend == "ref":
        return _upfirdn2d_ref(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    return _upfirdn2d_op(x, f, [upx, upy], [downx, downy], [px0, px1, py0, py1], flip_filter, gain, backend)


def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1, separable=None) -> Tensor:
    r"""Convenience: a float32 FIR filter for :func:`upfirdn2d` (NVlabs ``setup_filter``).

    Args:
        f: filter taps (tensor, array or list), 0-D, 1-D ``[taps]`` or 2-D ``[fh, fw]``; ``None``
            means ``[1]``.
        device: where to put the result.
        normalize: divide by the sum of the taps (DC gain 1).
        flip_filter: flip the filter.
        gain: overall gain (``gain ** (ndim / 2)`` is applied to the taps).
        separable: keep a 1-D filter separable; ``None``: separable if 1-D with >= 8 taps, else
            the 1-D filter is expanded to its outer product (2-D).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2):
        raise ValueError(f"setup_filter: f must be 0-D, 1-D or 2-D, got shape {tuple(f.shape)}")
    if f.numel() == 0:
        raise ValueError("setup_filter: f must not be empty")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"setup_filter: separable={separable} does not fit a {f.ndim}-D filter")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def filter2d(x: Tensor, f: Optional[Tensor], padding=0, flip_filter: bool = False, gain: float = 1,
             impl: str = "auto", strict: Optional[bool] = None) -> Tensor:
    r"""Filter with ``f`` keeping the size (NVlabs ``filter2d``): ``padding`` is added to the
    ``fw // 2, (fw - 1) // 2`` (and ``fh``) padding that keeps the image size. See :func:`upfirdn2d`."""
    check_filter("filter2d", "f", f)
    px0, px1, py0, py1 = parse_padding("filter2d", "padding", padding)
    fw, fh = filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl, strict=strict)


def upsample2d(x: Tensor, f: Optional[Tensor], up=2, padding=0, flip_filter: bool = False, gain: float = 1,
               impl: str = "auto", strict: Optional[bool] = None) -> Tensor:
    r"""Up-sample by ``up`` with FIR ``f`` (NVlabs ``upsample2d``): output ``H*upy x W*upx`` for
    ``padding=0``; gain ``upx*upy`` so the DC level is kept. See :func:`upfirdn2d`."""
    check_filter("upsample2d", "f", f)
    upx, upy = parse_scaling("upsample2d", "up", up)
    px0, px1, py0, py1 = parse_padding("upsample2d", "padding", padding)
    gain = as_float("upsample2d", "gain", gain)
    fw, fh = filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy,
                     impl=impl, strict=strict)


def downsample2d(x: Tensor, f: Optional[Tensor], down=2, padding=0, flip_filter: bool = False, gain: float = 1,
                 impl: str = "auto", strict: Optional[bool] = None) -> Tensor:
    r"""Down-sample by ``down`` with FIR ``f`` (NVlabs ``downsample2d``): output ``H/downy x W/downx``
    for ``padding=0`` and even sizes. See :func:`upfirdn2d`."""
    check_filter("downsample2d", "f", f)
    downx, downy = parse_scaling("downsample2d", "down", down)
    px0, px1, py0, py1 = parse_padding("downsample2d", "padding", padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl,
                     strict=strict)
