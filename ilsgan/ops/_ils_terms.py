"""Per-sample reductions of the ILS (CLUB) independence term and of the mask priors.

ILS terms (ILSGAN.md section 5). With the gradient gate ``g(v) = v`` where ``|v| < 1`` and a
detached copy of ``v`` where ``|v| >= 1`` (same value, no gradient), ``fg = g(f)``, ``bg = g(b)``:

    pair 1 (hidden background vs visible foreground): x1 = m*bg,     y1 = m*fg
    pair 2 (hidden foreground vs visible background): x2 = (1-m)*fg, y2 = (1-m)*bg
    pos_k[n] = mean_d  phi(x_k[n, d]        - y_k[n, d])
    neg_k[n] = mean_d  phi(x_k[perm_k[n], d] - y_k[n, d])        (d over C*H*W)

``phi(u) = |u|`` for ``distribution="laplace"``, ``0.5*u**2`` for ``"gaussian"``. The CLUB estimate
of pair k is ``-mean_n pos_k + mean_n neg_k``; ``L_ILS = sigma * (I1 + I2)``
(:func:`ilsgan.losses.ils_loss`). The mask is not detached.

Mask terms: ``bin[n] = mean_hw min(m, 1-m)`` and ``area[n] = mean_hw m``.

Both ops are deterministic on every backend (no atomics anywhere: each per-sample sum is
formed in a fixed order), so ``deterministic=`` only documents intent; accumulation is in at
least float32 (float64 for float64 inputs).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._extensions import kernels_missing
from ._dispatch import OpSpec, register_op, resolve
from ._composite import _check_fbm, _check_tensor

SPEC = register_op(OpSpec("ils_terms", ("ref", "cpu", "cuda", "triton")))
MASK_SPEC = register_op(OpSpec("mask_terms", ("ref", "cpu", "cuda", "triton")))

DISTRIBUTIONS = {"laplace": 0, "gaussian": 1}
_FAST_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


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

_KERNELS = {}


def _kernels(backend: str):
    k = _KERNELS.get(backend)
    if k is None:
        if backend == "cpu":
            from ._extensions import cpu_ops

            k = cpu_ops()
        elif backend == "cuda":
            from ._extensions import cuda_ops

            k = cuda_ops()
        elif backend == "triton":
            from ilsgan.kernels import ils_terms as k
        else:
            raise ValueError(f"ils_terms: no kernels for backend {backend!r}")
        _KERNELS[backend] = k
    return k


@torch.library.custom_op("ilsgan::ils_terms", mutates_args=())
def _ils_terms_op(f: Tensor, b: Tensor, m: Tensor, perm1: Tensor, perm2: Tensor, dist: int, backend: str) -> Tensor:
    return _kernels(backend).ils_terms_fwd(f, b, m, perm1, perm2, dist)


@_ils_terms_op.register_fake
def _(f, b, m, perm1, perm2, dist, backend):
    return f.new_empty((f.shape[0], 4), dtype=_out_dtype(f.dtype))


@torch.library.custom_op("ilsgan::ils_terms_bwd", mutates_args=())
def _ils_terms_bwd_op(
    g: Tensor, f: Tensor, b: Tensor, m: Tensor, perm1: Tensor, perm2: Tensor, dist: int, backend: str
) -> Tuple[Tensor, Tensor, Tensor]:
    inv1 = torch.argsort(perm1)
    inv2 = torch.argsort(perm2)
    gf, gb, gm = _kernels(backend).ils_terms_bwd(g, f, b, m, perm1, perm2, inv1, inv2, dist)
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
    return _kernels(backend).mask_terms_fwd(m)


@_mask_terms_op.register_fake
def _(m, backend):
    return m.new_empty((m.shape[0], 2), dtype=_out_dtype(m.dtype))


@torch.library.custom_op("ilsgan::mask_terms_bwd", mutates_args=())
def _mask_terms_bwd_op(g: Tensor, m: Tensor, backend: str) -> Tensor:
    return _kernels(backend).mask_terms_bwd(g, m)


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
        out = _kernels(backend).ils_terms_fwd(f, b, m, perm1, perm2, dist)
        _ils_setup(ctx, (f, b, m, perm1, perm2, dist, backend), out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        f, b, m, perm1, perm2 = ctx.saved_tensors
        inv1, inv2 = torch.argsort(perm1), torch.argsort(perm2)
        gf, gb, gm = _kernels(ctx.backend).ils_terms_bwd(g.contiguous(), f, b, m, perm1, perm2, inv1, inv2, ctx.dist)
        return gf, gb, gm, None, None, None, None


class _MaskFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m, backend):
        out = _kernels(backend).mask_terms_fwd(m)
        _mask_setup(ctx, (m, backend), out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return _kernels(ctx.backend).mask_terms_bwd(g.contiguous(), m), None


def _eager(*tensors) -> bool:
    return not torch.compiler.is_compiling() and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ------------------------------------------------------------------------------------------------
# Public functions.

@torch.compiler.assume_constant_result
def _resolve(which: str, impl: str, device_type: str, strict: Optional[bool], dtype: torch.dtype) -> str:
    spec = SPEC if which == "ils" else MASK_SPEC
    names = ("ils_terms_fwd", "ils_terms_bwd") if which == "ils" else ("mask_terms_fwd", "mask_terms_bwd")

    def unsupported(backend: str) -> Optional[str]:
        if backend == "ref":
            return None
        if dtype not in _FAST_DTYPES:
            return f"dtype {dtype} not handled"
        if backend == "cpu" and dtype == torch.bfloat16:
            return "the cpu kernels take float16/float32/float64 (bfloat16 on GPU backends)"
        return kernels_missing(spec.name, backend, names, "ils_terms")

    return resolve(spec, impl, torch.device(device_type), strict, unsupported)


def _check_perm(name: str, p, N: int, device: torch.device, full: bool = True) -> Tensor:
    if not isinstance(p, Tensor):
        raise TypeError(f"ils_terms: {name} must be a torch.Tensor, got {type(p).__name__}")
    if p.is_floating_point() or p.is_complex() or p.dtype == torch.bool:
        raise TypeError(f"ils_terms: {name} must be an integer tensor, got dtype {p.dtype}")
    if tuple(p.shape) != (N,):
        raise ValueError(f"ils_terms: {name} must have shape [N] = [{N}], got {tuple(p.shape)}")
    if p.device != device:
        raise ValueError(f"ils_terms: {name} is on {p.device} but f is on {device}; they must be on one device")
    if full and not torch.compiler.is_compiling():  # a host sync on GPU: skipped for ils_loss's own draws
        if not torch.equal(torch.sort(p.to(torch.long)).values, torch.arange(N, device=p.device)):
            raise ValueError(f"ils_terms: {name} must be a permutation of range(N) with N={N}")
    return p.to(torch.long).contiguous()


def ils_terms(
    f: Tensor,
    b: Tensor,
    m: Tensor,
    perm1: Tensor,
    perm2: Tensor,
    distribution: str = "laplace",
    impl: str = "auto",
    strict: Optional[bool] = None,
    deterministic: Optional[bool] = None,
) -> Tensor:
    r"""Per-sample CLUB terms of the two ILS region pairs, in one fused pass over (f, b, m).

    Args:
        f, b: foreground and background layers [N,C,H,W] (floating, same dtype and device).
        m: mask [N,1,H,W], same dtype and device (not detached: gradients reach it).
        perm1, perm2: integer tensors [N], each a permutation of ``range(N)`` (on f's device):
            the negative pairs ``x1[perm1[n]]`` vs ``y1[n]`` and ``x2[perm2[n]]`` vs ``y2[n]``.
        distribution: ``"laplace"`` (``|x - y|``, the paper) or ``"gaussian"`` (``0.5 (x - y)^2``).
        impl, strict: backend choice as for every op (see :func:`ilsgan.ops.composite`).
        deterministic: accepted for documentation; every backend is always deterministic (per-sample
            sums in a fixed order, no atomics), whatever this or
            ``torch.are_deterministic_algorithms_enabled()`` says.

    Returns:
        A tensor [N,4] with columns ``(pos1, neg1, pos2, neg2)`` (see the module docstring);
        ``I1 + I2 = (-pos1 + neg1 - pos2 + neg2).mean()``. dtype: f's dtype for float32/float64,
        float32 for float16/bfloat16 inputs (fp32 accumulation). The gradient gate zeroes the
        gradient into pixels with ``|f| >= 1`` (resp. ``|b| >= 1``). First-order gradients w.r.t.
        f, b, m on every backend (``ref``: any order). Fast kernels read contiguous NCHW
        (other layouts are copied first).
    """
    return _ils_terms(f, b, m, perm1, perm2, distribution, impl, strict, deterministic, True, True)


def _ils_terms(f, b, m, perm1, perm2, distribution, impl, strict, deterministic, check1: bool, check2: bool):
    _check_fbm("ils_terms", f, b, m)
    N = f.shape[0]
    p1 = _check_perm("perm1", perm1, N, f.device, check1)
    p2 = _check_perm("perm2", perm2, N, f.device, check2)
    if not isinstance(distribution, str) or distribution not in DISTRIBUTIONS:
        raise ValueError(f"ils_terms: distribution must be one of {sorted(DISTRIBUTIONS)}, got {distribution!r}")
    if deterministic is not None and not isinstance(deterministic, bool):
        raise TypeError(f"ils_terms: deterministic must be a bool or None, got {type(deterministic).__name__}")
    if not isinstance(impl, str):
        raise ValueError(f"ils_terms: impl must be a string, got {type(impl).__name__}")
    dist = DISTRIBUTIONS[distribution]
    backend = _resolve("ils", impl, f.device.type, strict, f.dtype)
    if backend == "ref":
        return _ils_terms_ref(f, b, m, p1, p2, dist)
    f, b, m = f.contiguous(), b.contiguous(), m.contiguous()
    if torch.compiler.is_compiling():
        return _ils_terms_op(f, b, m, p1, p2, dist, backend)
    if _eager(f, b, m):
        return _IlsFn.apply(f, b, m, p1, p2, dist, backend)
    return _kernels(backend).ils_terms_fwd(f, b, m, p1, p2, dist)


def mask_terms(
    m: Tensor, impl: str = "auto", strict: Optional[bool] = None, deterministic: Optional[bool] = None
) -> Tensor:
    r"""Per-sample mask statistics for the mask losses.

    Args:
        m: mask [N,1,H,W] (floating; also [N,C,H,W] is accepted, reduced over C,H,W).
        impl, strict: backend choice as for every op.
        deterministic: accepted for documentation; every backend is always deterministic.

    Returns:
        A tensor [N,2] with columns ``(bin, area)``: ``bin[n] = mean min(m, 1-m)`` (the
        binarization term) and ``area[n] = mean m``. dtype as in :func:`ils_terms`. Gradient of
        ``min(m, 1-m)``: +1 where m < 0.5, -1 where m > 0.5, 0 at exactly 0.5 (as torch.minimum).
    """
    _check_tensor("mask_terms", "m", m)
    if deterministic is not None and not isinstance(deterministic, bool):
        raise TypeError(f"mask_terms: deterministic must be a bool or None, got {type(deterministic).__name__}")
    if not isinstance(impl, str):
        raise ValueError(f"mask_terms: impl must be a string, got {type(impl).__name__}")
    backend = _resolve("mask", impl, m.device.type, strict, m.dtype)
    if backend == "ref":
        return _mask_terms_ref(m)
    m = m.contiguous()
    if torch.compiler.is_compiling():
        return _mask_terms_op(m, backend)
    if _eager(m):
        return _MaskFn.apply(m, backend)
    return _kernels(backend).mask_terms_fwd(m)
