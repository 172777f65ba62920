"""StyleGAN2 modulated convolution with a fused synthesis-layer epilogue.

``y = clamp(act(conv2d_resample(x, w * s [* d]) + noise + bias) * gain, -clamp, clamp)``

with ``d[n,o] = rsqrt(sum_{i,k} (w[o,i,k] s[n,i])^2 + 1e-8)`` (demodulation). Without the epilogue
arguments (``bias=None, act="linear", gain=None, clamp=None``) this is NVlabs StyleGAN2-ADA
``networks.modulated_conv2d`` exactly; with them it is a whole ``SynthesisLayer`` / ``ToRGBLayer``
(the NVlabs layer calls ``bias_act(x, bias, act, gain, clamp)`` after the modulated conv).

Backends
--------
``ref``: the NVlabs code in plain torch, then :func:`ilsgan.ops.bias_act` (``impl="ref"``) for the
epilogue; any order of gradients. ``fused_modconv=True`` is NVlabs' grouped conv (per-sample weights,
``groups=N``), ``False`` NVlabs' "scale activations -> shared conv -> fma(d, noise)".

``cpu`` / ``cuda`` / ``triton``: the demodulation coefficients are computed without the per-sample
weight, ``d = rsqrt(s^2 @ (sum_k w^2)^T + 1e-8)`` (an [N,I]x[I,O] product), then
1. ``xs = x * s`` (custom op ``ilsgan::modconv_scale``; its backward is one fused pass producing
   ``dx = dxs * s`` and ``ds[n,i] = sum_hw dxs * x``),
2. one shared-weight :func:`ilsgan.ops.conv2d_resample` (torch's conv: mkldnn / cuDNN; the FIR steps
   of up/down-sampling on this backend's upfirdn2d),
3. one epilogue pass (custom op ``ilsgan::modconv_epilogue``) applying ``d``, noise, bias, the
   activation, gain and clamp. It saves the conv output ``z`` (not ``y``); its backward is one pass
   over ``(dy, z)`` that writes ``dz`` and reduces, in the same pass, ``sum_hw du*z`` per (n, o) (the
   gradient of ``d``, from which the style and weight gradients of the demodulation follow through
   small [N,O]x[O,I] products), the bias gradient and the noise gradient.
Kernels: ``csrc/cpu/modulated_conv2d.cpp``, ``csrc/cuda/modulated_conv2d.cu``,
``kernels/modulated_conv2d.py``. The fused epilogue handles ``linear``, ``relu`` and ``lrelu``
(``alpha >= 0``); other activations run the epilogue without bias and then
:func:`ilsgan.ops.bias_act` on the same backend. First-order gradients w.r.t. ``x``, ``weight``,
``styles``, ``noise`` and ``bias`` are exact; second-order gradients through the fast backends are
not provided (StyleGAN2 path-length regularization is not used by ILSGAN): use ``impl="ref"``.

``fused_modconv=None`` (default) picks, on every backend, per-sample weights (``w * s * d`` folded,
no activation scaling) when ``N == 1`` or for a plain 1x1 conv (ToRGB: the per-sample weights are
only [N,O,I]; the ``cpu`` backend runs its own kernel for up to 8 outputs on NCHW inputs, one pass
over x forward and one backward, because the layer is memory-bound; otherwise, and on the GPU
backends, one batched matmul), and otherwise the shared-weight path (3x3 convs: one big conv instead of N
grouped ones, no [N,O,I,k,k] tensor; faster on CPU in training). ``True`` / ``False`` force the
per-sample / shared-weight path (on the fast backends too; the per-sample path skips ``d`` in the
epilogue).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._activations import ACTIVATIONS
from ._bias_act import bias_act
from ._conv2d_resample import conv2d_resample, output_size
from ._dispatch import BACKENDS, OpSpec, kernels, register_op, resolve_backend
from ._extensions import match_strides, memory_format_of
from ._validate import check_bool, check_factor, check_filter, check_tensor, parse_activation, parse_padding

__all__ = ["modulated_conv2d", "SPEC"]

SPEC = register_op(OpSpec(
    "modulated_conv2d", BACKENDS,
    kernels=("modconv_epilogue_fwd", "modconv_epilogue_bwd", "modconv_scale_bwd"),
    triton_module="modulated_conv2d",
    cpu_kernels=("modconv_1x1_fwd", "modconv_1x1_bwd"),
))

_FUSED_ACTS = ("linear", "relu", "lrelu")  # activations the epilogue kernels apply themselves
_OP = "modulated_conv2d"


# ------------------------------------------------------------------------------------------------
# NVlabs reference paths (plain torch).


def _prenormalize(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool) -> Tuple[Tensor, Tensor]:
    """NVlabs: pre-normalize weight and styles when x is fp16 (avoids fp16 overflow)."""
    if x.dtype == torch.float16 and demodulate:
        i, kh, kw = weight.shape[1:]
        weight = weight * (1 / math.sqrt(i * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


def _modconv_ref(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight, fused_modconv):
    """NVlabs ``networks.modulated_conv2d`` (noise added out of place), FIR steps on ``ref``."""
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    weight, styles = _prenormalize(x, weight, styles, demodulate)
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [NOIkk]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [NO]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight, impl="ref")
        if demodulate and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))  # NVlabs fma
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        return x
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n,
                        flip_weight=flip_weight, impl="ref")
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def _epilogue_ref(x, bias, act, alpha, gain, clamp):
    if bias is None and act == "linear" and gain == 1 and clamp is None:
        return x
    return bias_act(x, None if bias is None else bias.to(x.dtype), act=act, alpha=alpha, gain=gain, clamp=clamp,
                    impl="ref")


# ------------------------------------------------------------------------------------------------
# Kernels of the fast backends. Each backend exposes
#   modconv_epilogue_fwd(z, d, noise, b, noise_mode, act, alpha, gain, clamp) -> y
#   modconv_epilogue_bwd(dy, z, d, noise, b, noise_mode, act, alpha, gain, clamp, need_dd, need_db,
#                        need_dnoise) -> (dz, dd, db, dnoise)
#   modconv_scale_bwd(dxs, x, s, need_ds) -> (dx, ds)
# z, y, dy, dz (and noise/dnoise in mode 2) share one dense layout, NCHW or channels_last; z's dtype
# is float16/bfloat16/float32/float64; d [N,O], b [O], noise (mode 1: [N,H*W]) are in the compute
# dtype (float64 for float64, float32 otherwise), as are dd, db, dnoise and ds. d None = 1, b None = 0.
# u = z*d + noise + b; y = clamp(act(u)*gain); du = dy*gain*act'(u)*[|act(u)*gain| <= clamp];
# dz = du*d; dd = sum_hw du*z; db = sum_{n,hw} du; dnoise = sum_o du (mode 1) or du (mode 2).
# Unneeded gradients come back as empty tensors.


@torch.library.custom_op("ilsgan::modconv_epilogue", mutates_args=())
def _epilogue_op(
    z: Tensor, d: Optional[Tensor], noise: Optional[Tensor], b: Optional[Tensor], noise_mode: int, act: int,
    alpha: float, gain: float, clamp: float, backend: str,
) -> Tensor:
    return kernels(SPEC, backend).modconv_epilogue_fwd(z, d, noise, b, noise_mode, act, alpha, gain, clamp)


@_epilogue_op.register_fake
def _(z, d, noise, b, noise_mode, act, alpha, gain, clamp, backend):
    return torch.empty_like(z)


@torch.library.custom_op("ilsgan::modconv_epilogue_bwd", mutates_args=())
def _epilogue_bwd_op(
    dy: Tensor, z: Tensor, d: Optional[Tensor], noise: Optional[Tensor], b: Optional[Tensor], noise_mode: int,
    act: int, alpha: float, gain: float, clamp: float, need_dd: bool, need_db: bool, need_dnoise: bool, backend: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(kernels(SPEC, backend).modconv_epilogue_bwd(dy, z, d, noise, b, noise_mode, act, alpha, gain, clamp,
                                                             need_dd, need_db, need_dnoise))


@_epilogue_bwd_op.register_fake
def _(dy, z, d, noise, b, noise_mode, act, alpha, gain, clamp, need_dd, need_db, need_dnoise, backend):
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    n, o = z.shape[:2]
    hw = z.shape[2] * z.shape[3]
    dz = torch.empty_like(z)
    dd = z.new_empty([n, o] if need_dd else [0], dtype=acc)
    db = z.new_empty([o] if need_db else [0], dtype=acc)
    if need_dnoise and noise_mode == 1:
        dn = z.new_empty([n, hw], dtype=acc)
    elif need_dnoise and noise_mode == 2:
        dn = torch.empty_like(z, dtype=acc)
    else:
        dn = z.new_empty([0], dtype=acc)
    return dz, dd, db, dn


def _epilogue_setup(ctx, inputs, output):
    z, d, noise, b, noise_mode, act, alpha, gain, clamp, backend = inputs
    ctx.args = (noise_mode, act, alpha, gain, clamp, backend)
    ctx.save_for_backward(z, d, noise, b)


def _epilogue_backward(ctx, dy):
    noise_mode, act, alpha, gain, clamp, backend = ctx.args
    z, d, noise, b = ctx.saved_tensors
    need_dd = d is not None and ctx.needs_input_grad[1]
    need_dn = noise is not None and ctx.needs_input_grad[2]
    need_db = b is not None and ctx.needs_input_grad[3]
    dy = match_strides(dy, z)
    dz, dd, db, dn = _epilogue_bwd_op(dy, z, d, noise, b, noise_mode, act, alpha, gain, clamp, need_dd, need_db,
                                      need_dn, backend)
    return (dz if ctx.needs_input_grad[0] else None, dd if need_dd else None, dn if need_dn else None,
            db if need_db else None, None, None, None, None, None, None)


_epilogue_op.register_autograd(_epilogue_backward, setup_context=_epilogue_setup)


@torch.library.custom_op("ilsgan::modconv_scale", mutates_args=())
def _scale_op(x: Tensor, s: Tensor, backend: str) -> Tensor:
    # One elementwise pass; torch's mul keeps x's memory format. s is rounded to x's dtype (NVlabs).
    return x * s.to(x.dtype).reshape(s.shape[0], s.shape[1], 1, 1)


@_scale_op.register_fake
def _(x, s, backend):
    return torch.empty_like(x)


@torch.library.custom_op("ilsgan::modconv_scale_bwd", mutates_args=())
def _scale_bwd_op(dxs: Tensor, x: Tensor, s: Tensor, need_ds: bool, backend: str) -> Tuple[Tensor, Tensor]:
    return tuple(kernels(SPEC, backend).modconv_scale_bwd(dxs, x, s, need_ds))


@_scale_bwd_op.register_fake
def _(dxs, x, s, need_ds, backend):
    return torch.empty_like(x), s.new_empty(s.shape if need_ds else [0])


def _scale_setup(ctx, inputs, output):
    x, s, backend = inputs
    ctx.backend = backend
    ctx.save_for_backward(x, s)


def _scale_backward(ctx, dxs):
    x, s = ctx.saved_tensors
    need_ds = ctx.needs_input_grad[1]
    dxs = match_strides(dxs, x)
    dx, ds = _scale_bwd_op(dxs, x, s, need_ds, ctx.backend)
    return (dx if ctx.needs_input_grad[0] else None), (ds if need_ds else None), None


_scale_op.register_autograd(_scale_backward, setup_context=_scale_setup)


# Per-sample 1x1 convolution with few outputs (ToRGB), cpu backend only (the GPU backends use bmm):
#   modconv_1x1_fwd(x [N,I,H,W], w [N,O,I]) -> z [N,O,H,W]
#   modconv_1x1_bwd(dz, x, w, need_dx, need_dw) -> (dx, dw), one pass over x
# x/z/dz NCHW-contiguous; w (and dw) in the compute dtype. First order only.
_MAX_1X1_OUTPUTS = 8


@torch.library.custom_op("ilsgan::modconv_1x1", mutates_args=())
def _conv1x1_op(x: Tensor, w: Tensor) -> Tensor:
    return kernels(SPEC, "cpu").modconv_1x1_fwd(x, w)


@_conv1x1_op.register_fake
def _(x, w):
    return x.new_empty(x.shape[0], w.shape[1], x.shape[2], x.shape[3])


@torch.library.custom_op("ilsgan::modconv_1x1_bwd", mutates_args=())
def _conv1x1_bwd_op(dz: Tensor, x: Tensor, w: Tensor, need_dx: bool, need_dw: bool) -> Tuple[Tensor, Tensor]:
    return tuple(kernels(SPEC, "cpu").modconv_1x1_bwd(dz, x, w, need_dx, need_dw))


@_conv1x1_bwd_op.register_fake
def _(dz, x, w, need_dx, need_dw):
    return (torch.empty_like(x) if need_dx else x.new_empty([0]),
            torch.empty_like(w) if need_dw else w.new_empty([0]))


def _conv1x1_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _conv1x1_backward(ctx, dz):
    need_dx, need_dw = ctx.needs_input_grad
    dx, dw = _conv1x1_bwd_op(dz.contiguous(), *ctx.saved_tensors, need_dx, need_dw)
    return (dx if need_dx else None), (dw if need_dw else None)


_conv1x1_op.register_autograd(_conv1x1_backward, setup_context=_conv1x1_setup)


def _modconv_fast(
    x, weight, styles, noise, up, down, pad, f, demodulate, flip_weight, grouped, bias, act, alpha, gain, clamp,
    backend, strict,
):
    n, i, h, w_ = x.shape
    o, _, kh, kw = weight.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    weight, styles = _prenormalize(x, weight, styles, demodulate)
    dco = None
    if demodulate:
        q = weight.to(acc).square().sum(dim=[2, 3])  # [O, I]
        dco = (styles.to(acc).square() @ q.t() + 1e-8).rsqrt()  # [N, O]
    fmt = memory_format_of(x)
    x = x.contiguous(memory_format=fmt)
    if grouped:
        wn = weight.to(acc).unsqueeze(0) * styles.to(acc).reshape(n, 1, i, 1, 1)
        if dco is not None:
            wn = wn * dco.reshape(n, o, 1, 1, 1)
        if kh == 1 and kw == 1 and up == 1 and down == 1 and pad == (0, 0, 0, 0):
            # 1x1 (ToRGB): per-sample weights [N, O, I]. The cpu backend runs its fused kernel (one pass
            # over x forward and one backward); otherwise one batched matmul, in x's memory format.
            wn = wn.reshape(n, o, i)
            if backend == "cpu" and fmt == torch.contiguous_format and o <= _MAX_1X1_OUTPUTS:
                z = _conv1x1_op(x, wn.contiguous())
            elif fmt == torch.channels_last:
                z = torch.bmm(x.permute(0, 2, 3, 1).reshape(n, h * w_, i), wn.to(x.dtype).transpose(1, 2))
                z = z.reshape(n, h, w_, o).permute(0, 3, 1, 2)
            else:
                z = torch.bmm(wn.to(x.dtype), x.reshape(n, i, h * w_)).reshape(n, o, h, w_)
        elif n == 1:
            z = conv2d_resample(x, wn[0].to(x.dtype), f=f, up=up, down=down, padding=list(pad),
                                flip_weight=flip_weight, impl=backend, strict=strict)
        else:
            z = conv2d_resample(x.reshape(1, n * i, h, w_), wn.reshape(n * o, i, kh, kw).to(x.dtype), f=f, up=up,
                                down=down, padding=list(pad), groups=n, flip_weight=flip_weight, impl=backend,
                                strict=strict)
            z = z.reshape(n, o, *z.shape[2:])
        d_epi = None
    else:
        xs = _scale_op(x, styles.to(acc).contiguous(), backend)
        z = conv2d_resample(xs, weight.to(x.dtype), f=f, up=up, down=down, padding=list(pad), flip_weight=flip_weight,
                            impl=backend, strict=strict)
        d_epi = dco.contiguous() if dco is not None else None

    act_id = ACTIVATIONS[act].index
    fused_act = act in _FUSED_ACTS and (act != "lrelu" or alpha >= 0)
    z = z.contiguous(memory_format=fmt)  # keep x's memory format (a copy only if a FIR step lost it)
    if not fused_act:
        e_b, e_act, e_alpha, e_gain, e_clamp = None, 1, 0.0, 1.0, -1.0
    else:
        e_b, e_act, e_alpha, e_gain = bias, act_id, alpha, gain
        e_clamp = -1.0 if clamp is None else clamp
    noise_mode = 0
    if noise is not None:
        oh, ow = z.shape[2], z.shape[3]
        noise = noise.to(acc)
        if noise.shape[1] == 1:
            noise_mode = 1
            noise = noise.expand(n, 1, oh, ow).reshape(n, oh * ow).contiguous()
        else:
            noise_mode = 2
            noise = match_strides(noise.expand(n, o, oh, ow), z)
    if e_b is not None:
        e_b = e_b.to(acc).contiguous()
    if d_epi is None and noise is None and e_b is None and e_act == 1 and e_gain == 1 and e_clamp < 0:
        y = z
    else:
        y = _epilogue_op(z, d_epi, noise, e_b, noise_mode, e_act, float(e_alpha), float(e_gain), float(e_clamp),
                         backend)
    if not fused_act:
        y = bias_act(y, None if bias is None else bias.to(y.dtype), act=act, alpha=alpha, gain=gain, clamp=clamp,
                     impl=backend, strict=strict)
    return y


# ------------------------------------------------------------------------------------------------
# Public function.

def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    noise: Optional[Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Union[int, Sequence[int]] = 0,
    resample_filter: Optional[Tensor] = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: Optional[bool] = None,
    bias: Optional[Tensor] = None,
    act: str = "linear",
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
    impl: str = "auto",
    strict: Optional[bool] = None,
) -> Tensor:
    r"""Modulated (and demodulated) convolution, optionally followed by a synthesis layer's epilogue.

    ``y = clamp(act(conv2d_resample(x, w * s[n] * d[n]) + noise + bias, alpha) * gain, -clamp, clamp)``
    with ``d[n,o] = rsqrt(sum_{i,k} (w[o,i,k] s[n,i])^2 + 1e-8)`` when ``demodulate`` (else 1).

    Args:
        x: activations ``[N, I, H, W]``, float16/bfloat16/float32/float64 (16-bit: float32 epilogue);
            NCHW or channels_last (kept: the output has the memory format torch's conv gives for
            it, i.e. channels_last in -> channels_last out); other layouts are copied.
        weight: ``[O, I, kh, kw]`` floating point (may be float32 while ``x`` is float16, as in
            NVlabs' mixed precision; it is cast to ``x``'s dtype for the conv).
        styles: ``[N, I]`` floating point.
        noise: optional, added after the (demodulated) conv: 4-D, ``[N or 1, 1 or O, H', W']``
            (NVlabs layers use ``[N, 1, H', W']``), where ``H', W'`` is the output size.
        up, down: integer resampling factors (conv2d_resample rules: transposed stride-2 conv then
            FIR for up, FIR then stride-2 conv for down).
        padding: int, ``[px, py]`` or ``[px0, px1, py0, py1]`` (NVlabs convention). Output size per
            axis ``(in*up + p0 + p1 - k + 1) // down``.
        resample_filter: FIR filter (float32 1-D or 2-D, e.g. ``setup_filter([1,3,3,1])``), or None.
        demodulate: apply ``d``. When ``x`` is float16 and ``demodulate``, weight and styles are first
            normalized by their max-norms (NVlabs fp16 pre-normalization; ``d`` makes it invariant).
        flip_weight: False = true convolution, True = correlation (NVlabs layers: ``up == 1``).
        fused_modconv: None (default) = per-sample weights when ``N == 1`` or for a plain 1x1 conv,
            else shared-weight conv with activation scaling; True = per-sample weights (grouped
            conv; batched matmul for a plain 1x1 on the fast backends); False = shared-weight conv.
        bias: optional ``[O]`` bias of the epilogue.
        act: epilogue activation, one of ``linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus,
            swish`` (bias_act semantics; fused in the kernel: linear, relu, lrelu with alpha >= 0).
        alpha, gain: activation parameter and output gain; None = the activation's defaults
            (lrelu: 0.2 and sqrt(2); linear: gain 1), as in :func:`ilsgan.ops.bias_act`.
        clamp: clamp the output to ``[-clamp, clamp]`` (>= 0), None disables it.
        impl: ``"auto"``, ``"ref"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; a forced backend that
            cannot run raises :class:`ilsgan.ops.BackendUnavailableError`.
        strict: make a fallback of ``auto`` to ``ref`` an error (default: env ``ILSGAN_STRICT``).

    Returns:
        ``[N, O, H', W']`` in ``x``'s dtype. First-order gradients w.r.t. x, weight, styles, noise
        and bias on every backend; higher orders on ``ref`` only.

    Example (NVlabs SynthesisLayer with ``conv_clamp=256``, layer gain ``g``)::

        y = modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1,
                             resample_filter=f, flip_weight=(up == 1), bias=bias, act="lrelu",
                             gain=math.sqrt(2) * g, clamp=256 * g)
    """
    check_tensor(_OP, "x", x, 4)
    check_tensor(_OP, "weight", weight, like=x)
    if weight.dim() != 4:
        raise ValueError(f"{_OP}: weight must be 4-D [O, I, kh, kw], got shape {tuple(weight.shape)}")
    n, i = x.shape[:2]
    o, wi, kh, kw = weight.shape
    if wi != i:
        raise ValueError(f"{_OP}: weight has {wi} input channels (weight.shape[1]) but x has {i} (x.shape[1])")
    check_tensor(_OP, "styles", styles, like=x)
    if tuple(styles.shape) != (n, i):
        raise ValueError(f"{_OP}: styles must have shape [N, I] = [{n}, {i}], got {tuple(styles.shape)}")
    up = check_factor(_OP, "up", up)
    down = check_factor(_OP, "down", down)
    pad = parse_padding(_OP, "padding", padding)
    check_filter(_OP, "resample_filter", resample_filter, x.device)
    demodulate = check_bool(_OP, "demodulate", demodulate)
    flip_weight = check_bool(_OP, "flip_weight", flip_weight)
    if fused_modconv is not None:
        fused_modconv = check_bool(_OP, "fused_modconv", fused_modconv)
    oh, ow = output_size(x.shape[2], x.shape[3], kh, kw, up, down, pad)
    if oh < 1 or ow < 1:
        raise ValueError(f"{_OP}: the output would be {oh}x{ow} (input {tuple(x.shape[2:])}, kernel {kh}x{kw}, "
                         f"up={up}, down={down}, padding={pad}); check padding")
    if noise is not None:
        check_tensor(_OP, "noise", noise, like=x)
        ok = (noise.dim() == 4 and noise.shape[0] in (1, n) and noise.shape[1] in (1, o)
              and tuple(noise.shape[2:]) == (oh, ow))
        if not ok:
            raise ValueError(f"{_OP}: noise must have shape [N or 1, 1 or O, H', W'] = [{n}|1, 1|{o}, {oh}, {ow}], "
                             f"got {tuple(noise.shape)}")
    if bias is not None:
        check_tensor(_OP, "bias", bias, like=x)
        if tuple(bias.shape) != (o,):
            raise ValueError(f"{_OP}: bias must have shape [O] = [{o}], got {tuple(bias.shape)}")
    _, alpha, gain, clamp = parse_activation(_OP, act, alpha, gain, clamp)

    backend = resolve_backend(_OP, impl, x.device.type, strict, x.dtype, False)
    if fused_modconv is None:  # see the module docstring
        grouped = n == 1 or (kh == 1 and kw == 1 and up == 1 and down == 1 and pad == (0, 0, 0, 0))
    else:
        grouped = fused_modconv
    if backend == "ref":
        y = _modconv_ref(x, weight, styles, noise, up, down, list(pad), resample_filter, demodulate, flip_weight,
                         grouped)
        return _epilogue_ref(y, bias, act, alpha, gain, clamp)
    return _modconv_fast(x, weight, styles, noise, up, down, pad, resample_filter, demodulate, flip_weight, grouped,
                         bias, act, alpha, gain, clamp, backend, strict)
