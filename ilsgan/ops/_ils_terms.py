"""Per-sample reductions of the ILS (CLUB) independence term and of the mask priors.

ILS terms (the independence term of ILSGAN: a CLUB upper bound of the mutual information between
what one layer shows and what the other hides in the same region). With the gradient gate ``g(v) = v`` where ``|v| < 1`` and a
detached copy of ``v`` where ``|v| >= 1`` (same value, no gradient), ``fg = g(f)``, ``bg = g(b)``:

    pair 1 (hidden background vs visible foreground): x1 = m*bg,     y1 = m*fg
    pair 2 (hidden foreground vs visible background): x2 = (1-m)*fg, y2 = (1-m)*bg
    pos_k[n] = mean_d  phi(x_k[n, d]        - y_k[n, d])
    neg_k[n] = mean_d  phi(x_k[perm_k[n], d] - y_k[n, d])        (d over C*H*W)

``phi(u) = |u|`` for ``distribution="laplace"``, ``0.5*u**2`` for ``"gaussian"``. The CLUB estimate
of pair k is ``-mean_n pos_k + mean_n neg_k``; ``L_ILS = sigma * (I1 + I2)``
(:func:`ilsgan.losses.ils_loss`). The mask is not detached.

Mask terms: ``bin[n] = mean_hw min(m, 1-m)`` and ``area[n] = mean_hw m``.

Both ops are deterministic on every backend: no atomics anywhere, each per-sample sum is formed
in a fixed order (on cpu by one thread per sample, so the thread count does not change the bits).
Accumulation is in at least float32 (float64 for float64 inputs).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._dispatch import BACKENDS, OpSpec, kernels, needs_autograd, register_op, resolve_backend
from ._validate import check_index_tensor, check_layers, check_tensor

__all__ = ["ils_terms", "mask_terms", "DISTRIBUTIONS", "SPEC", "MASK_SPEC"]

SPEC = register_op(OpSpec("ils_terms", BACKENDS, kernels=("ils_terms_fwd", "ils_terms_bwd"), triton_module="ils_terms"))
MASK_SPEC = register_op(OpSpec("mask_terms", BACKENDS, kernels=("mask_terms_fwd", "mask_terms_bwd"),
                               triton_module="ils_terms"))

DISTRIBUTIONS = {"laplace": 0, "gaussian": 1}


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# ------------------------------------------------------------------------------------------------
# Reference (plain differentiable torch).


def _gate(v: Tensor) -> Tensor:
    return torch.where(v.abs() >= 1, v.detach(), v)


def _ils_terms_ref(f: Tensor, b: Tensor, m: Tensor, perm1: Tensor, perm2: Tensor, dist: int) -> Tensor:
    dt = _out_dtype(f.dtype)
    f, b, m = f.to(dt), b.to(dt), m.to(dt)
    fg, bg = _gate(f), _gate(b)
    x1, y1 = m * bg, m * fg
    x2, y2 = (1 - m) * fg, (1 - m) * bg

    def phi(u: Tensor) -> Tensor:
        return (u.abs() if dist == 0 else 0.5 * u * u).flatten(1).mean(1)

    return torch.stack([phi(x1 - y1), phi(x1[perm1] - y1), phi(x2 - y2), phi(x2[perm2] - y2)], dim=1)


def _mask_terms_ref(m: Tensor) -> Tensor:
    m = m.to(_out_dtype(m.dtype))
    return torch.stack([torch.minimum(m, 1 - m).flatten(1).mean(1), m.flatten(1).mean(1)], dim=1)


# ------------------------------------------------------------------------------------------------
# Fast backends. Every backend module provides (contiguous NCHW inputs, perms int64 [N]):
#   ils_terms_fwd(f, b, m, perm1, perm2, dist) -> [N,4] (float32 for 16-bit inputs)
#   ils_terms_bwd(g [N,4], f, b, m, perm1, perm2, inv1, inv2, dist) -> (gf, gb, gm)
#   mask_terms_fwd(m) -> [N,2];  mask_terms_bwd(g [N,2], m) -> gm
# ``inv_k`` is the inverse permutation of ``perm_k`` (the backward gathers, never scatters).


@torch.library.custom_op("ilsgan::ils_terms", mutates_args=())
def _ils_terms_op(f: Tensor, b: Tensor, m: Tensor, perm1: Tensor, perm2: Tensor, dist: int, backend: str) -> Tensor:
    return kernels(SPEC, backend).ils_terms_fwd(f, b, m, perm1, perm2, dist)


@_ils_terms_op.register_fake
def _(f, b, m, perm1, perm2, dist, backend):
    return f.new_empty((f.shape[0], 4), dtype=_out_dtype(f.dtype))


@torch.library.custom_op("ilsgan::ils_terms_bwd", mutates_args=())
def _ils_terms_bwd_op(
    g: Tensor, f: Tensor, b: Tensor, m: Tensor, perm1: Tensor, perm2: Tensor, dist: int, backend: str
) -> Tuple[Tensor, Tensor, Tensor]:
    inv1 = torch.argsort(perm1)
    inv2 = torch.argsort(perm2)
    gf, gb, gm = kernels(SPEC, backend).ils_terms_bwd(g, f, b, m, perm1, perm2, inv1, inv2, dist)
    return gf, gb, gm


@_ils_terms_bwd_op.register_fake
def _(g, f, b, m, perm1, perm2, dist, backend):
    return torch.empty_like(f), torch.empty_like(b), torch.empty_like(m)


def _ils_setup(ctx, inputs, output):
    f, b, m, perm1, perm2, dist, backend = inputs
    ctx.save_for_backward(f, b, m, perm1, perm2)
    ctx.dist, ctx.backend = dist, backend


def _ils_backward(ctx, g):
    f, b, m, perm1, perm2 = ctx.saved_tensors
    gf, gb, gm = _ils_terms_bwd_op(g.contiguous(), f, b, m, perm1, perm2, ctx.dist, ctx.backend)
    return gf, gb, gm, None, None, None, None


_ils_terms_op.register_autograd(_ils_backward, setup_context=_ils_setup)


@torch.library.custom_op("ilsgan::mask_terms", mutates_args=())
def _mask_terms_op(m: Tensor, backend: str) -> Tensor:
    return kernels(MASK_SPEC, backend).mask_terms_fwd(m)


@_mask_terms_op.register_fake
def _(m, backend):
    return m.new_empty((m.shape[0], 2), dtype=_out_dtype(m.dtype))


@torch.library.custom_op("ilsgan::mask_terms_bwd", mutates_args=())
def _mask_terms_bwd_op(g: Tensor, m: Tensor, backend: str) -> Tensor:
    return kernels(MASK_SPEC, backend).mask_terms_bwd(g, m)


@_mask_terms_bwd_op.register_fake
def _(g, m, backend):
    return torch.empty_like(m)


def _mask_setup(ctx, inputs, output):
    m, backend = inputs
    ctx.save_for_backward(m)
    ctx.backend = backend


def _mask_backward(ctx, g):
    (m,) = ctx.saved_tensors
    return _mask_terms_bwd_op(g.contiguous(), m, ctx.backend), None


_mask_terms_op.register_autograd(_mask_backward, setup_context=_mask_setup)


# Eager mode: torch.autograd.Function wrappers (a fraction of a custom op's Python overhead);
# torch.compile traces the custom ops above instead.


class _IlsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, b, m, perm1, perm2, dist, backend):
        out = kernels(SPEC, backend).ils_terms_fwd(f, b, m, perm1, perm2, dist)
        _ils_setup(ctx, (f, b, m, perm1, perm2, dist, backend), out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, b, m, perm1, perm2 = ctx.saved_tensors
        inv1, inv2 = torch.argsort(perm1), torch.argsort(perm2)
        gf, gb, gm = kernels(SPEC, ctx.backend).ils_terms_bwd(g.contiguous(), f, b, m, perm1, perm2, inv1, inv2, ctx.dist)
        return gf, gb, gm, None, None, None, None


class _MaskFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m, backend):
        out = kernels(MASK_SPEC, backend).mask_terms_fwd(m)
        _mask_setup(ctx, (m, backend), out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return kernels(MASK_SPEC, ctx.backend).mask_terms_bwd(g.contiguous(), m), None


# ------------------------------------------------------------------------------------------------
# Public functions.

def _check_perm(name: str, p, f: Tensor, full: bool) -> Tensor:
    N = f.shape[0]
    p = check_index_tensor("ils_terms", name, p, (N,), f)
    if full and not torch.compiler.is_compiling():  # a host sync on GPU
        if not torch.equal(torch.sort(p).values, torch.arange(N, device=p.device)):
            raise ValueError(f"ils_terms: {name} must be a permutation of range(N) with N={N}")
    return p


def ils_terms(
    f: Tensor,
    b: Tensor,
    m: Tensor,
    perm1: Tensor,
    perm2: Tensor,
    distribution: str = "laplace",
    impl: str = "auto",
    strict: Optional[bool] = None,
    validate_perms: bool = True,
) -> Tensor:
    r"""Per-sample CLUB terms of the two ILS region pairs, in one fused pass over (f, b, m).

    Args:
        f, b: foreground and background layers [N,C,H,W] (floating, same dtype and device).
        m: mask [N,1,H,W], same dtype and device (not detached: gradients reach it).
        perm1, perm2: integer tensors [N], each a permutation of ``range(N)`` (on f's device):
            the negative pairs ``x1[perm1[n]]`` vs ``y1[n]`` and ``x2[perm2[n]]`` vs ``y2[n]``.
        distribution: ``"laplace"`` (``|x - y|``, the paper) or ``"gaussian"`` (``0.5 (x - y)^2``).
        impl, strict: backend choice as for every op (see :func:`ilsgan.ops.composite`).
        validate_perms: check that perm1 and perm2 are permutations (a host sync on GPU; False for
            permutations drawn with ``torch.randperm``, as :func:`ilsgan.losses.ils_loss` does).

    Returns:
        A tensor [N,4] with columns ``(pos1, neg1, pos2, neg2)`` (see the module docstring);
        ``I1 + I2 = (-pos1 + neg1 - pos2 + neg2).mean()``. dtype: f's dtype for float32/float64,
        float32 for float16/bfloat16 inputs (fp32 accumulation). The gradient gate zeroes the
        gradient into pixels with ``|f| >= 1`` (resp. ``|b| >= 1``). First-order gradients w.r.t.
        f, b, m on every backend (``ref``: any order). Fast kernels read contiguous NCHW
        (other layouts are copied first). Deterministic: see the module docstring.
    """
    check_layers("ils_terms", f, b, m)
    p1 = _check_perm("perm1", perm1, f, validate_perms)
    p2 = _check_perm("perm2", perm2, f, validate_perms)
    if not isinstance(distribution, str) or distribution not in DISTRIBUTIONS:
        raise ValueError(f"ils_terms: distribution must be one of {sorted(DISTRIBUTIONS)}, got {distribution!r}")
    dist = DISTRIBUTIONS[distribution]
    backend = resolve_backend("ils_terms", impl, f.device.type, strict, f.dtype, False)
    if backend == "ref":
        return _ils_terms_ref(f, b, m, p1, p2, dist)
    f, b, m = f.contiguous(), b.contiguous(), m.contiguous()
    if torch.compiler.is_compiling():
        return _ils_terms_op(f, b, m, p1, p2, dist, backend)
    if needs_autograd(f, b, m):
        return _IlsFn.apply(f, b, m, p1, p2, dist, backend)
    return kernels(SPEC, backend).ils_terms_fwd(f, b, m, p1, p2, dist)


def mask_terms(m: Tensor, impl: str = "auto", strict: Optional[bool] = None) -> Tensor:
    r"""Per-sample mask statistics for the mask losses.

    Args:
        m: mask [N,1,H,W] (floating; also [N,C,H,W] is accepted, reduced over C,H,W).
        impl, strict: backend choice as for every op.

    Returns:
        A tensor [N,2] with columns ``(bin, area)``: ``bin[n] = mean min(m, 1-m)`` (the
        binarization term) and ``area[n] = mean m``. dtype as in :func:`ils_terms`. Gradient of
        ``min(m, 1-m)``: +1 where m < 0.5, -1 where m > 0.5, 0 at exactly 0.5 (as torch.minimum).
    """
    check_tensor("mask_terms", "m", m, 4)
    backend = resolve_backend("mask_terms", impl, m.device.type, strict, m.dtype, False)
    if backend == "ref":
        return _mask_terms_ref(m)
    m = m.contiguous()
    if torch.compiler.is_compiling():
        return _mask_terms_op(m, backend)
    if needs_autograd(m):
        return _MaskFn.apply(m, backend)
    return kernels(MASK_SPEC, backend).mask_terms_fwd(m)
