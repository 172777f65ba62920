"""2-D convolution with optional FIR up/down-sampling (NVlabs StyleGAN2-ADA ``conv2d_resample``).

Semantics are exactly those of NVlabs ``torch_utils/ops/conv2d_resample.py``: the result equals
"upsample by ``up`` with FIR ``f`` (gain ``up**2``), pad, convolve with ``w``, FIR-filter ``f`` and
keep every ``down``-th pixel", executed through the cheaper equivalent paths NVlabs uses:

- 1x1 kernel, down only: FIR-downsample first, then the 1x1 conv;
- 1x1 kernel, up only: 1x1 conv first, then FIR-upsample;
- down only: FIR (no decimation), then a stride-``down`` conv;
- up (optionally followed by down): stride-``up`` transposed conv, then FIR (then FIR-downsample);
- neither, symmetric non-negative padding: one plain ``conv2d``;
- otherwise (asymmetric / negative padding): pad/crop with ``upfirdn2d``, then the conv.

The convolutions are torch's (mkldnn / cuDNN); the FIR steps go through
:func:`ilsgan.ops.upfirdn2d`, to which the resolved backend of this op is passed (``impl="cpu"``
here runs the ``cpu`` upfirdn2d kernels, ``impl="ref"`` the plain-torch ones). Gradients of any
order (torch's conv and upfirdn2d are both differentiable to any order).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._dispatch import BACKENDS, BackendUnavailableError, OpSpec, register_op, resolve_backend
from ._upfirdn2d import upfirdn2d
from ._validate import check_bool, check_factor, check_filter, check_tensor, filter_size, parse_padding

__all__ = ["conv2d_resample", "SPEC", "output_size"]

# No kernels of its own: the backend is the one of the FIR steps (upfirdn2d); the convs are torch's.
SPEC = register_op(OpSpec("conv2d_resample", BACKENDS))


def output_size(h: int, w: int, kh: int, kw: int, up: int, down: int, pad: Tuple[int, int, int, int]) -> Tuple[int, int]:
    """Output (height, width): ``(in*up + p0 + p1 - k + 1) // down`` per axis (any path)."""
    px0, px1, py0, py1 = pad
    return (h * up + py0 + py1 - kh + 1) // down, (w * up + px0 + px1 - kw + 1) // down


def _conv(x: Tensor, w: Tensor, stride=1, padding=0, groups=1, transpose=False, flip_weight=True) -> Tensor:
    out_channels, in_per_group, kh, kw = w.shape
    if not flip_weight and (kw > 1 or kh > 1):  # conv2d performs correlation; flip for a true convolution
        w = w.flip([2, 3])
    if transpose:
        return torch.nn.functional.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return torch.nn.functional.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _conv2d_resample_impl(
    x: Tensor, w: Tensor, f: Optional[Tensor], up: int, down: int, pad: Tuple[int, int, int, int], groups: int,
    flip_weight: bool, flip_filter: bool, ufd_impl: str, strict: Optional[bool],
) -> Tensor:
    """The NVlabs path selection; ``ufd_impl`` is passed to upfirdn2d."""

    def ufd(t, filt, up=1, down=1, padding=0, gain=1):
        return upfirdn2d(t, filt, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain,
                         impl=ufd_impl, strict=strict)

    out_channels, in_per_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = pad

    # Padding bookkeeping for the FIR footprint.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, down only: downsample first, then convolve.
    if kw == 1 and kh == 1 and (down > 1 and up == 1):
        x = ufd(x, f, down=down, padding=[px0, px1, py0, py1])
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, up only: convolve first, then upsample.
    if kw == 1 and kh == 1 and (up > 1 and down == 1):
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return ufd(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2)

    # Down only: FIR, then strided convolution.
    if down > 1 and up == 1:
        x = ufd(x, f, padding=[px0, px1, py0, py1])
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Up (optionally followed by down): transposed strided convolution, then FIR.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=(not flip_weight))
        x = ufd(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2)
        if down > 1:
            x = ufd(x, f, down=down)
        return x

    # Neither, padding the conv supports: one plain conv2d.
    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # Generic: pad/crop (and resample) with upfirdn2d, then convolve.
    x = ufd(x, (f if up > 1 else None), up=up, padding=[px0, px1, py0, py1], gain=up**2)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = ufd(x, f, down=down)
    return x


@torch.compiler.assume_constant_result
def _upfirdn_impl(backend: str, device_type: str, strict: Optional[bool], dtype: torch.dtype) -> str:
    """The upfirdn2d backend under this op's backend: the same one when upfirdn2d can run it for
    this device and dtype, else ``"auto"`` (upfirdn2d's own choice, which honours strict mode).
    Resolved (and cached) by resolve_backend like upfirdn2d's own calls."""
    if backend == "ref":
        return "ref"
    try:
        return resolve_backend("upfirdn2d", backend, device_type, strict, dtype, False)
    except BackendUnavailableError:
        return "auto"


def conv2d_resample(
    x: Tensor,
    w: Tensor,
    f: Optional[Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Union[int, Sequence[int]] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
    impl: str = "auto",
    strict: Optional[bool] = None,
) -> Tensor:
    r"""2-D convolution with optional up/down-sampling (NVlabs ``conv2d_resample``).

    Args:
        x: input ``[N, C, H, W]`` (float16/32/64, bfloat16); contiguous or channels_last.
        w: weight ``[O, C // groups, kh, kw]``, same dtype and device as ``x``.
        f: low-pass FIR filter, float32, ``[taps]`` (separable) or ``[fh, fw]``, or None (identity),
            e.g. from :func:`ilsgan.ops.setup_filter`. Never differentiated.
        up, down: integer up/down-sampling factors (>= 1).
        padding: int, ``[px, py]`` or ``[px0, px1, py0, py1]``; relative to the *upsampled* image
            (NVlabs convention), negative values crop. Output size per axis:
            ``(in*up + p0 + p1 - k + 1) // down``.
        groups: number of groups (``C`` and ``O`` divisible by it).
        flip_weight: False = true convolution, True = correlation (torch's conv2d; the default).
        flip_filter: False = convolve with ``f``, True = correlate.
        impl: backend of the FIR steps (:func:`ilsgan.ops.upfirdn2d`): ``"auto"``, ``"ref"``,
            ``"cpu"``, ``"cuda"``, ``"triton"``. The convolutions are always torch's.
        strict: make a fallback of ``auto`` to ``ref`` an error (default: env ``ILSGAN_STRICT``).

    Returns:
        ``[N, O, H', W']`` of ``x``'s dtype. First and higher order gradients w.r.t. ``x`` and ``w``.
    """
    op = "conv2d_resample"
    check_tensor(op, "x", x, 4)
    check_tensor(op, "w", w, like=x, same_dtype=True)
    if w.dim() != 4:
        raise ValueError(f"{op}: w must be 4-D [O, C // groups, kh, kw], got shape {tuple(w.shape)}")
    groups = check_factor(op, "groups", groups)
    up = check_factor(op, "up", up)
    down = check_factor(op, "down", down)
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(
            f"{op}: w expects {w.shape[1]} input channels per group x groups={groups} = "
            f"{w.shape[1] * groups}, but x has {x.shape[1]} channels (x.shape[1])"
        )
    if w.shape[0] % groups != 0:
        raise ValueError(f"{op}: w.shape[0] = {w.shape[0]} output channels is not divisible by groups={groups}")
    check_filter(op, "f", f, x.device)
    pad = parse_padding(op, "padding", padding)
    flip_weight = check_bool(op, "flip_weight", flip_weight)
    flip_filter = check_bool(op, "flip_filter", flip_filter)
    oh, ow = output_size(x.shape[2], x.shape[3], w.shape[2], w.shape[3], up, down, pad)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: the output would be {oh}x{ow} (input {x.shape[2]}x{x.shape[3]}, kernel "
            f"{w.shape[2]}x{w.shape[3]}, up={up}, down={down}, padding={pad}); check padding"
        )
    backend = resolve_backend(op, impl, x.device.type, strict, x.dtype, False)
    return _conv2d_resample_impl(x, w, f, up, down, pad, groups, flip_weight, flip_filter,
                                 _upfirdn_impl(backend, x.device.type, strict, x.dtype), strict)
