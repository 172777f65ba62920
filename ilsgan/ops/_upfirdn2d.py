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

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ._extensions import kernels_missing
from ._dispatch import OpSpec, register_op, resolve

__all__ = ["upfirdn2d", "setup_filter", "filter2d", "upsample2d", "downsample2d", "SPEC"]

SPEC = register_op(OpSpec("upfirdn2d", ("ref", "cpu", "cuda", "triton")))

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------------------------------------
# Argument parsing (shared by every backend and the helpers).


def _parse_scaling(value, name: str, op: str = "upfirdn2d") -> Tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints (x, y), got a bool")
    if isinstance(value, int):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints (x, y), got {value!r}")
    sx, sy = int(value[0]), int(value[1])
    if sx < 1 or sy < 1:
        raise ValueError(f"{op}: {name} must be >= 1 along both axes, got {value!r}")
    return sx, sy


def _parse_padding(value, name: str = "padding", op: str = "upfirdn2d") -> Tuple[int, int, int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a list of 2 or 4 ints, got a bool")
    if isinstance(value, int):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 4) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise TypeError(
            f"{op}: {name} must be an int, [px, py] or [px0, px1, py0, py1] (ints), got {value!r}"
        )
    if len(value) == 2:
        px, py = value
        value = [px, px, py, py]
    px0, px1, py0, py1 = (int(v) for v in value)
    return px0, px1, py0, py1


def _check_filter(f, x: Optional[Tensor] = None, op: str = "upfirdn2d") -> None:
    if f is None:
        return
    if not isinstance(f, Tensor):
        raise TypeError(f"{op}: f must be a torch.Tensor or None, got {type(f).__name__}")
    if f.dim() not in (1, 2):
        raise ValueError(f"{op}: f must be 1-D [taps] (separable) or 2-D [fh, fw], got shape {tuple(f.shape)}")
    if f.numel() == 0:
        raise ValueError(f"{op}: f must not be empty, got shape {tuple(f.shape)}")
    if f.dtype != torch.float32:
        raise TypeError(f"{op}: f must be float32 (see setup_filter), got dtype {f.dtype}")
    if f.requires_grad:
        raise ValueError(f"{op}: f must not require grad (the filter is never differentiated); pass f.detach()")
    if x is not None and f.device != x.device:
        raise ValueError(f"{op}: f is on {f.device} but x is on {x.device}; they must be on the same device")


def _get_filter_size(f: Optional[Tensor]) -> Tuple[int, int]:
    """(fw, fh); a 1-D (separable) filter has ``taps`` along both axes."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def _as_float(value, name: str, op: str = "upfirdn2d") -> float:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return value


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
# Fast backends: one custom op, its own backward.
# Kernel contract (cpu: torch.ops.ilsgan_cpu.upfirdn2d, cuda: torch.ops.ilsgan_cuda.upfirdn2d,
# triton: ilsgan.kernels.upfirdn2d.upfirdn2d):
#   upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain) -> y
# x: contiguous NCHW (float16/bfloat16/float32/float64); f: contiguous float32 [taps] or [fh, fw]
# on x's device; y: contiguous NCHW of x's dtype.


def _kernel(backend: str):
    if backend == "cpu":
        from ._extensions import cpu_ops

        return cpu_ops().upfirdn2d
    if backend == "cuda":
        from ._extensions import cuda_ops

        return cuda_ops().upfirdn2d
    if backend == "triton":
        from ilsgan.kernels import upfirdn2d as tk

        return tk.upfirdn2d
    raise ValueError(f"upfirdn2d: no kernel for backend {backend!r}")


def _layout_of(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("ilsgan::upfirdn2d", mutates_args=())
def _upfirdn2d_op(
    x: Tensor, f: Tensor, up: List[int], down: List[int], padding: List[int], flip_filter: bool, gain: float,
    backend: str,
) -> Tensor:
    fmt = _layout_of(x)
    fw, fh = _get_filter_size(f)
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, fw, fh, up[0], up[1], down[0], down[1], *padding)
    if x.numel() == 0:
        return x.new_empty([n, c, oh, ow]).contiguous(memory_format=fmt)
    y = _kernel(backend)(x.contiguous(), f.contiguous(), up[0], up[1], down[0], down[1], padding[0], padding[1],
                         padding[2], padding[3], flip_filter, gain)
    return y.contiguous(memory_format=fmt)


@_upfirdn2d_op.register_fake
def _(x, f, up, down, padding, flip_filter, gain, backend):
    fw, fh = _get_filter_size(f)
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, fw, fh, up[0], up[1], down[0], down[1], *padding)
    return x.new_empty([n, c, oh, ow]).contiguous(memory_format=_layout_of(x))


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
    fw, fh = _get_filter_size(f)
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

def _kernel_missing(backend: str) -> Optional[str]:
    return kernels_missing("upfirdn2d", backend, ("upfirdn2d",), "upfirdn2d")


def _unsupported_for(device_type: str, dtype: torch.dtype):
    def check(backend: str) -> Optional[str]:
        if backend == "ref":
            return None
        if dtype not in _FLOAT_DTYPES:
            return f"dtype {dtype} not handled"
        if dtype == torch.bfloat16 and backend == "triton" and device_type == "cpu":
            return "bfloat16 is handled by the triton backend on GPU only"
        return _kernel_missing(backend)

    return check


@torch.compiler.assume_constant_result
def _resolve(impl: str, device_type: str, strict: Optional[bool], dtype: torch.dtype) -> str:
    # Depends on facts about the process only; evaluated eagerly while torch.compile traces.
    return resolve(SPEC, impl, torch.device(device_type), strict, _unsupported_for(device_type, dtype))


def _check_x(x, op: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{op}: x must have a non-empty height and width, got shape {tuple(x.shape)}")


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
        x: ``[N, C, H, W]``, float16/float32/float64 (bfloat16 on GPU backends and ``ref``);
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
    _check_x(x, op)
    _check_filter(f, x, op)
    upx, upy = _parse_scaling(up, "up", op)
    downx, downy = _parse_scaling(down, "down", op)
    px0, px1, py0, py1 = _parse_padding(padding, "padding", op)
    if not isinstance(flip_filter, (bool, np.bool_)):
        raise TypeError(f"{op}: flip_filter must be a bool, got {type(flip_filter).__name__}")
    flip_filter = bool(flip_filter)
    gain = _as_float(gain, "gain", op)
    fw, fh = _get_filter_size(f)
    h, w = int(x.shape[2]), int(x.shape[3])
    oh, ow = _out_size(h, w, fw, fh, upx, upy, downx, downy, px0, px1, py0, py1)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: the output would be {oh}x{ow} (< 1x1): input {h}x{w}, up ({upx}, {upy}), "
            f"padding {[px0, px1, py0, py1]}, filter {fh}x{fw}, down ({downx}, {downy}); "
            "check padding / filter size"
        )
    if not isinstance(impl, str):
        raise ValueError(f"{op}: impl must be a string, got {type(impl).__name__}")

    backend = _resolve(impl, x.device.type, strict, x.dtype)
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
    _check_filter(f, None, "filter2d")
    px0, px1, py0, py1 = _parse_padding(padding, "padding", "filter2d")
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl, strict=strict)


def upsample2d(x: Tensor, f: Optional[Tensor], up=2, padding=0, flip_filter: bool = False, gain: float = 1,
               impl: str = "auto", strict: Optional[bool] = None) -> Tensor:
    r"""Up-sample by ``up`` with FIR ``f`` (NVlabs ``upsample2d``): output ``H*upy x W*upx`` for
    ``padding=0``; gain ``upx*upy`` so the DC level is kept. See :func:`upfirdn2d`."""
    _check_filter(f, None, "upsample2d")
    upx, upy = _parse_scaling(up, "up", "upsample2d")
    px0, px1, py0, py1 = _parse_padding(padding, "padding", "upsample2d")
    gain = _as_float(gain, "gain", "upsample2d")
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy,
                     impl=impl, strict=strict)


def downsample2d(x: Tensor, f: Optional[Tensor], down=2, padding=0, flip_filter: bool = False, gain: float = 1,
                 impl: str = "auto", strict: Optional[bool] = None) -> Tensor:
    r"""Down-sample by ``down`` with FIR ``f`` (NVlabs ``downsample2d``): output ``H/downy x W/downx``
    for ``padding=0`` and even sizes. See :func:`upfirdn2d`."""
    _check_filter(f, None, "downsample2d")
    downx, downy = _parse_scaling(down, "down", "downsample2d")
    px0, px1, py0, py1 = _parse_padding(padding, "padding", "downsample2d")
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl,
                     strict=strict)
