"""Layer compositing ``m*f + (1-m)*b`` with an optional fused per-sample integer shift of f and m.

Semantics (ILSGAN's perturbed composition: the foreground layer and its mask are moved, the
background is not)::

    fs[n, c, y, x] = f[n, c, y - ty[n], x - tx[n]]   (0 where the source is outside the image)
    ms[n, 0, y, x] = m[n, 0, y - ty[n], x - tx[n]]   (0 where the source is outside the image)
    out = ms * fs + (1 - ms) * b

with ``shift[n] = (tx, ty)``: positive ``tx`` moves content toward larger x (right), positive
``ty`` toward larger y (down). The background is never moved. Without ``shift``, ``fs = f`` and
``ms = m``. The fast backends read f and m at shifted addresses: no shifted copy is materialized.

Backward (one pass): ``gb = go*(1-ms)``, ``gf = S^T(go*ms)``, ``gm = S^T(sum_c go*(fs-b) + gms)``
where ``S^T`` is the adjoint shift (by ``-t``, zero fill) and ``gms`` the gradient flowing into
the returned shifted mask. The backward is itself differentiable (second order), its own backward
written with plain torch ops.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._dispatch import BACKENDS, OpSpec, kernels, needs_autograd, register_op, resolve_backend
from ._extensions import memory_format_of
from ._validate import check_index_tensor, check_layers

__all__ = ["composite", "shift_ref", "unshift_ref", "SPEC"]

SPEC = register_op(OpSpec("composite", BACKENDS, kernels=("composite_fwd", "composite_bwd"), triton_module="composite"))


# ------------------------------------------------------------------------------------------------
# Reference (plain differentiable torch, any order of gradients).


def shift_ref(x: Tensor, shift: Tensor) -> Tensor:
    """``x`` [N,C,H,W] translated by integer ``shift`` [N,2] = (tx, ty) per sample, zero fill."""
    N, C, H, W = x.shape
    shift = shift.to(device=x.device, dtype=torch.long)
    tx, ty = shift[:, 0], shift[:, 1]
    ys = torch.arange(H, device=x.device)[None, :] - ty[:, None]  # [N,H] source rows
    xs = torch.arange(W, device=x.device)[None, :] - tx[:, None]  # [N,W] source cols
    valid = ((ys >= 0) & (ys < H))[:, :, None] & ((xs >= 0) & (xs < W))[:, None, :]  # [N,H,W]
    idx = ys.clamp(0, H - 1)[:, :, None] * W + xs.clamp(0, W - 1)[:, None, :]
    g = x.reshape(N, C, H * W).gather(2, idx.reshape(N, 1, H * W).expand(N, C, H * W)).reshape(N, C, H, W)
    return torch.where(valid[:, None], g, torch.zeros((), dtype=x.dtype, device=x.device))


def unshift_ref(x: Tensor, shift: Tensor) -> Tensor:
    """The adjoint of :func:`shift_ref` (translation by ``-shift``, zero fill)."""
    return shift_ref(x, -shift.to(torch.long))


def _composite_ref(f: Tensor, b: Tensor, m: Tensor, shift: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    if shift is None:
        return m * f + (1 - m) * b, m
    fs = shift_ref(f, shift)
    ms = shift_ref(m, shift)
    return ms * fs + (1 - ms) * b, ms


# ------------------------------------------------------------------------------------------------
# Fast backends. Every backend module provides
#   composite_fwd(f, b, m, shift?) -> (out, ms)           ms is an empty tensor when shift is None
#   composite_bwd(go, gms?, f, b, m, shift?) -> (gf, gb, gm)
# on contiguous NCHW tensors (f, b, go: [N,C,H,W]; m, gms: [N,1,H,W]; shift int64 [N,2]).


@torch.library.custom_op("ilsgan::composite", mutates_args=())
def _composite_op(f: Tensor, b: Tensor, m: Tensor, shift: Optional[Tensor], backend: str) -> Tuple[Tensor, Tensor]:
    out, ms = kernels(SPEC, backend).composite_fwd(f, b, m, shift)
    return out, ms


@_composite_op.register_fake
def _(f, b, m, shift, backend):
    ms = torch.empty_like(m) if shift is not None else m.new_empty((0,))
    return torch.empty_like(f), ms


@torch.library.custom_op("ilsgan::composite_bwd", mutates_args=())
def _composite_bwd_op(
    go: Tensor, gms: Optional[Tensor], f: Tensor, b: Tensor, m: Tensor, shift: Optional[Tensor], backend: str
) -> Tuple[Tensor, Tensor, Tensor]:
    gf, gb, gm = kernels(SPEC, backend).composite_bwd(go, gms, f, b, m, shift)
    return gf, gb, gm


@_composite_bwd_op.register_fake
def _(go, gms, f, b, m, shift, backend):
    return torch.empty_like(f), torch.empty_like(b), torch.empty_like(m)


def _fwd_setup(ctx, inputs, output):
    f, b, m, shift, backend = inputs
    ctx.save_for_backward(f, b, m, shift)
    ctx.backend = backend


def _fwd_backward(ctx, go, gms, direct: bool = False):
    """Backward of composite. ``direct``: call the kernel without the custom op (eager, first order
    only: the op's dispatch was about half of a 32x3x64x64 forward+backward)."""
    f, b, m, shift = ctx.saved_tensors
    go = torch.zeros_like(f) if go is None else go.contiguous()
    gms = None if shift is None or gms is None else gms.contiguous()
    bwd = kernels(SPEC, ctx.backend).composite_bwd if direct else functools.partial(_composite_bwd_op, backend=ctx.backend)
    gf, gb, gm = bwd(go, gms, f, b, m, shift)
    return gf, gb, gm, None, None


_composite_op.register_autograd(_fwd_backward, setup_context=_fwd_setup)


def _bwd_setup(ctx, inputs, output):
    go, gms, f, b, m, shift, backend = inputs
    ctx.has_gms = gms is not None
    ctx.save_for_backward(go, f, b, m, shift)


def _bwd_backward(ctx, uf, ub, um):
    # Double backward in plain torch (differentiable again). With S the shift and S^T its adjoint:
    #   gf = S^T(go*ms), gb = go*(1-ms), gm = S^T(sum_c go*(fs-b) + gms).
    go, f, b, m, shift = ctx.saved_tensors
    sh = (lambda t: t) if shift is None else (lambda t: shift_ref(t, shift))
    ush = (lambda t: t) if shift is None else (lambda t: unshift_ref(t, shift))
    zf = torch.zeros_like(f)
    uf = zf if uf is None else uf
    ub = torch.zeros_like(b) if ub is None else ub
    um = torch.zeros_like(m) if um is None else um
    fs, ms, Uf, Um = sh(f), sh(m), sh(uf), sh(um)
    d_go = Uf * ms + ub * (1 - ms) + Um * (fs - b)
    d_gms = Um if ctx.has_gms else None
    d_f = ush(Um * go)
    d_b = -(Um * go)
    d_m = ush((go * (Uf - ub)).sum(1, keepdim=True))
    return d_go, d_gms, d_f, d_b, d_m, None, None


_composite_bwd_op.register_autograd(_bwd_backward, setup_context=_bwd_setup)


# Eager mode: the same wiring through torch.autograd.Function (a fraction of a custom op's Python
# overhead); its backward calls the backward custom op, so double backward still works.
# torch.compile traces the custom ops above instead (see composite()).


class _CompositeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, b, m, shift, backend):
        out, ms = kernels(SPEC, backend).composite_fwd(f, b, m, shift)
        _fwd_setup(ctx, (f, b, m, shift, backend), (out, ms))
        if shift is None:
            ctx.mark_non_differentiable(ms)
        return out, ms

    @staticmethod
    def backward(ctx, go, gms):
        # create_graph (grad mode on) needs the differentiable custom op; otherwise the kernel directly
        return _fwd_backward(ctx, go, gms, direct=not torch.is_grad_enabled())


# ------------------------------------------------------------------------------------------------
# Public function.

def composite(
    f: Tensor,
    b: Tensor,
    m: Tensor,
    shift: Optional[Tensor] = None,
    impl: str = "auto",
    strict: Optional[bool] = None,
) -> Tuple[Tensor, Tensor]:
    r"""Alpha compositing ``m*f + (1-m)*b``, optionally with f and m translated per sample.

    Args:
        f: foreground, floating tensor [N,C,H,W] (C is usually 3; any C >= 1).
        b: background, same shape, dtype and device as ``f``.
        m: mask (alpha), [N,1,H,W], same dtype and device as ``f``. Values are not clamped.
        shift: ``None``, or an integer tensor [N,2] on f's device holding ``(tx, ty)`` per sample.
            Positive ``tx`` moves f and m toward larger x, positive ``ty`` toward larger y;
            uncovered pixels become 0 (so the composite shows the background there). Any integer
            is allowed: ``|tx| >= W`` or ``|ty| >= H`` shifts everything out. Never differentiated.
        impl: ``"auto"``, ``"ref"``, ``"cpu"``, ``"cuda"`` or ``"triton"``; a forced backend that
            cannot run raises ``ilsgan.ops.BackendUnavailableError``.
        strict: make a fallback of ``auto`` to ``ref`` an error (default: env ``ILSGAN_STRICT``).

    Returns:
        A tuple ``(out, mask)``: the composite ``out`` [N,C,H,W] and the mask it used [N,1,H,W]:
        the translated mask when ``shift`` is given, ``m`` itself otherwise. Both are
        differentiable; gradients reach f, b and m.

    dtypes: float32, float64, float16 and bfloat16 (16-bit types computed in float32). Output dtype
    is f's. Layout: the fast kernels work on contiguous NCHW; a channels_last ``f`` gives a
    channels_last ``out`` (the wrapper converts), any other strided input is copied first. Gradients
    of first and second order on every backend (the fast backends' second order is plain torch).
    """
    op = "composite"
    check_layers(op, f, b, m)
    if shift is not None:
        shift = check_index_tensor(op, "shift", shift, (f.shape[0], 2), f)
    backend = resolve_backend(op, impl, f.device.type, strict, f.dtype, False)
    if backend == "ref":
        return _composite_ref(f, b, m, shift)
    fmt = memory_format_of(f)
    fc, bc, mc = f.contiguous(), b.contiguous(), m.contiguous()
    sc = None
    if shift is not None:  # clamping changes nothing (|t| >= size shifts everything out) but bounds offsets
        lim = max(f.shape[2], f.shape[3])
        sc = shift.clamp(-lim, lim)
    if torch.compiler.is_compiling():
        out, ms = _composite_op(fc, bc, mc, sc, backend)
    elif needs_autograd(f, b, m):
        out, ms = _CompositeFn.apply(fc, bc, mc, sc, backend)
    else:
        out, ms = kernels(SPEC, backend).composite_fwd(fc, bc, mc, sc)
    out = out.contiguous(memory_format=fmt)
    return out, (m if shift is None else ms)
