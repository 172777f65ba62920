"""Fused bias + activation + gain + clamp (NVlabs StyleGAN2-ADA ``bias_act`` semantics).

``y = clamp(act(x + b, alpha) * gain, -clamp, clamp)`` with ``b`` broadcast along ``dim``.

Backends: ``ref`` (plain torch, any order of gradients), ``cpu`` (C++ in ``csrc/cpu/bias_act.cpp``),
``cuda`` (``csrc/cuda/bias_act.cu``), ``triton`` (``kernels/bias_act.py``). The fast backends are
``torch.library`` custom ops (``ilsgan::bias_act``, ``ilsgan::bias_act_grad``,
``ilsgan::bias_act_grad2``): the backward is itself an op with its own backward, so first and second
order gradients (R1 penalty) work and ``torch.compile`` does not graph-break. Eager calls take the
same wiring through ``torch.autograd.Function`` (much less per-call Python overhead than a custom
op); calls traced by ``torch.compile`` use the custom ops. Both run the same kernels.

Gradient kernels work from what the activation needs: ``relu``/``lrelu``/``linear`` (and the clamp
mask) from the output ``y`` alone, ``tanh``/``sigmoid``/``elu``/``selu``/``softplus`` from ``y``,
``swish`` from ``x``. The bias gradient (the reduction of ``dx`` over every dim but ``dim``) is fused
into the gradient kernel (per-thread / per-block partial sums, then a deterministic sum of the
partials), never a second pass over ``dx``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._activations import ACTIVATIONS
from ._dispatch import BACKENDS, OpSpec, kernels, needs_autograd, register_op, resolve_backend
from ._extensions import match_strides, memory_format_of
from ._validate import check_tensor, parse_activation

__all__ = ["bias_act", "SPEC"]


def _limits(backend: str, device_type: str, dtype: torch.dtype, huge: bool) -> Optional[str]:
    if backend == "cuda" and huge:
        return "the cuda kernels take tensors of fewer than 2^31 elements (triton takes any size)"
    return None


SPEC = register_op(OpSpec("bias_act", BACKENDS, kernels=("bias_act_fwd", "bias_act_grad"), triton_module="bias_act",
                          limits=_limits))

_INDEX_TO_ACT = {a.index: a for a in ACTIVATIONS.values()}


# ------------------------------------------------------------------------------------------------
# Reference (plain torch): the oracle, differentiable to any order.


def _bias_act_ref(x: Tensor, b: Optional[Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float) -> Tensor:
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = ACTIVATIONS[act].fn(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ------------------------------------------------------------------------------------------------
# Kernels per backend. Every backend exposes the same two functions:
#   fwd(x, b, dim, act, alpha, gain, clamp) -> y
#   grad(g, x, b, y, dy, order, dim, act, alpha, gain, clamp, need_db) -> (dx, db)
# order 1: dx = g * gain * act'(x+b), zeroed where the output was clamped (g is dy).
# order 2: dx = g * dy * gain * act''(x+b), same mask (g is the gradient of dx).
# db = dx summed over every dim but ``dim`` ([0]-shaped when need_db is False).
# Tensors x, y, g, dy share one dense layout (contiguous or channels_last); b is contiguous 1-D.


@torch.library.custom_op("ilsgan::bias_act", mutates_args=())
def _bias_act_op(
    x: Tensor, b: Optional[Tensor], dim: int, act: int, alpha: float, gain: float, clamp: float, backend: str
) -> Tensor:
    if x.numel() == 0:
        return torch.empty_like(x)
    return kernels(SPEC, backend).bias_act_fwd(x, b, dim, act, alpha, gain, clamp)


@_bias_act_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp, backend):
    return torch.empty_like(x)


def _grad_impl(g, x, b, y, dy, order, dim, act, alpha, gain, clamp, need_db, backend):
    like = y if y is not None else (x if x is not None else g)
    g = match_strides(g, like)
    if dy is not None:
        dy = match_strides(dy, like)
    if g.numel() == 0:
        db = torch.zeros([g.shape[dim]] if need_db else [0], dtype=g.dtype, device=g.device)
        return torch.empty_like(g), db
    return kernels(SPEC, backend).bias_act_grad(g, x, b, y, dy, order, dim, act, alpha, gain, clamp, need_db)


def _grad_fake(g, x, y, dim, need_db):
    like = y if y is not None else (x if x is not None else g)
    dx = torch.empty_like(like, dtype=g.dtype)
    db = g.new_empty([g.shape[dim]] if need_db else [0])
    return dx, db


@torch.library.custom_op("ilsgan::bias_act_grad", mutates_args=())
def _bias_act_grad_op(
    dy: Tensor, x: Optional[Tensor], b: Optional[Tensor], y: Optional[Tensor], dim: int, act: int,
    alpha: float, gain: float, clamp: float, need_db: bool, backend: str,
) -> Tuple[Tensor, Tensor]:
    return _grad_impl(dy, x, b, y, None, 1, dim, act, alpha, gain, clamp, need_db, backend)


@_bias_act_grad_op.register_fake
def _(dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend):
    return _grad_fake(dy, x, y, dim, need_db)


@torch.library.custom_op("ilsgan::bias_act_grad2", mutates_args=())
def _bias_act_grad2_op(
    g: Tensor, dy: Tensor, x: Optional[Tensor], b: Optional[Tensor], y: Optional[Tensor], dim: int, act: int,
    alpha: float, gain: float, clamp: float, need_db: bool, backend: str,
) -> Tuple[Tensor, Tensor]:
    return _grad_impl(g, x, b, y, dy, 2, dim, act, alpha, gain, clamp, need_db, backend)


@_bias_act_grad2_op.register_fake
def _(g, dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend):
    return _grad_fake(g, x, y, dim, need_db)


def _saves(act: int, alpha: float, clamp: float):
    """(save x and b, save y) for the gradient of the forward op."""
    spec = _INDEX_TO_ACT[act]
    if spec.index == 3 and alpha < 0:  # lrelu with a negative slope: sign of y says nothing, use x
        return True, False
    save_x = spec.grad_reads == "x" or spec.has_2nd_grad
    save_y = spec.grad_reads == "y" or (clamp >= 0 and spec.grad_reads != "x")
    return save_x, save_y


def _fwd_setup(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp, backend = inputs
    save_x, save_y = _saves(act, alpha, clamp)
    ctx.args = (dim, act, alpha, gain, clamp, backend)
    ctx.has_b = b is not None
    ctx.save_for_backward(x if save_x else None, b if save_x else None, output if save_y else None)
    ctx.fmt = memory_format_of(x)


def _fwd_backward(ctx, dy):
    dim, act, alpha, gain, clamp, backend = ctx.args
    x, b, y = ctx.saved_tensors
    dy = dy.contiguous(memory_format=ctx.fmt)
    need_db = ctx.has_b and ctx.needs_input_grad[1]
    if not (ctx.needs_input_grad[0] or need_db):
        return None, None, None, None, None, None, None, None
    grad_op = _BiasActGradFn.apply if getattr(ctx, "eager", False) else _bias_act_grad_op
    dx, db = grad_op(dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend)
    return dx, (db if need_db else None), None, None, None, None, None, None


_bias_act_op.register_autograd(_fwd_backward, setup_context=_fwd_setup)


def _grad_setup(ctx, inputs, output):
    dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend = inputs
    spec = _INDEX_TO_ACT[act]
    ctx.args = (dim, act, alpha, gain, clamp, backend)
    ctx.has_2nd = spec.has_2nd_grad and x is not None
    ctx.has_b = b is not None
    ctx.need_db = need_db
    ctx.save_for_backward(dy if ctx.has_2nd else None, x, b, y)


def _grad_backward(ctx, d_dx, d_db):
    dim, act, alpha, gain, clamp, backend = ctx.args
    dy, x, b, y = ctx.saved_tensors
    like = y if y is not None else x
    if d_dx is not None and like is not None:
        d_dx = match_strides(d_dx, like)
    if ctx.need_db and d_db is not None and d_db.numel() > 0:
        shape = [1] * (like.dim() if like is not None else d_dx.dim())
        shape[dim] = -1
        extra = d_db.reshape(shape)
        d_dx = extra.expand(like.shape if like is not None else d_dx.shape) if d_dx is None else d_dx + extra
        if like is not None:
            d_dx = match_strides(d_dx, like)
    if d_dx is None:
        return (None,) * 11
    d_dy = d_x = d_b = None
    if ctx.needs_input_grad[0]:
        grad_op = _BiasActGradFn.apply if getattr(ctx, "eager", False) else _bias_act_grad_op
        d_dy, _ = grad_op(d_dx, x, b, y, dim, act, alpha, gain, clamp, False, backend)
    if ctx.has_2nd and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
        need_db = ctx.has_b and ctx.needs_input_grad[2]
        if getattr(ctx, "eager", False):  # no third order: the kernel directly
            d_x, d_b = _grad_impl(d_dx, x, b, y, dy, 2, dim, act, alpha, gain, clamp, need_db, backend)
        else:
            d_x, d_b = _bias_act_grad2_op(d_dx, dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend)
        if not need_db:
            d_b = None
        if not ctx.needs_input_grad[1]:
            d_x = None
    return d_dy, d_x, d_b, None, None, None, None, None, None, None, None


_bias_act_grad_op.register_autograd(_grad_backward, setup_context=_grad_setup)


# Eager mode: the same wiring through torch.autograd.Function, which costs a fraction of the
# Python overhead of a custom op call (~20 us instead of ~70 us per op on CPU); torch.compile
# traces the custom ops above instead (see bias_act()).


class _BiasActFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp, backend):
        y = kernels(SPEC, backend).bias_act_fwd(x, b, dim, act, alpha, gain, clamp) if x.numel() else torch.empty_like(x)
        ctx.eager = True
        _fwd_setup(ctx, (x, b, dim, act, alpha, gain, clamp, backend), y)
        return y

    @staticmethod
    def backward(ctx, dy):
        return _fwd_backward(ctx, dy)


class _BiasActGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend):
        dx, db = _grad_impl(dy, x, b, y, None, 1, dim, act, alpha, gain, clamp, need_db, backend)
        ctx.eager = True
        _grad_setup(ctx, (dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend), (dx, db))
        return dx, db

    @staticmethod
    def backward(ctx, d_dx, d_db):
        return _grad_backward(ctx, d_dx, d_db)


# ------------------------------------------------------------------------------------------------
# Public function.


def bias_act(
    x: Tensor,
    b: Optional[Tensor] = None,
    dim: int = 1,
    act: str = "linear",
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
    impl: str = "auto",
    strict: Optional[bool] = None,
) -> Tensor:
    r"""Fused bias, activation, gain and clamp: ``clamp(act(x + b, alpha) * gain, -clamp, clamp)``.

    Args:
        x: floating-point tensor of any shape (float32, float64, float16; bfloat16 too — fp16/bf16
            are computed in float32). Contiguous and channels_last (4-D) inputs are used as they
            are and the output has the same memory format; any other layout (e.g. a slice or a
            transpose) is first copied to a contiguous tensor.
        b: optional 1-D bias of length ``x.shape[dim]``, same dtype and device as ``x``.
        dim: the dimension of ``x`` the bias runs along (negative counts from the end). Only
            checked when ``b`` is given.
        act: one of ``linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish``.
        alpha: the activation's shape parameter (only ``lrelu`` uses it; default 0.2).
        gain: output scale; default per activation: sqrt(2) for relu, lrelu and swish, 1 otherwise.
        clamp: clamp the output to ``[-clamp, clamp]`` (``clamp >= 0``); ``None`` disables it.
        impl: ``"auto"`` (best backend for ``x.device``), ``"ref"``, ``"cpu"``, ``"cuda"`` or
            ``"triton"``; a forced backend that cannot run raises ``BackendUnavailableError``.
        strict: make a fallback of ``auto`` to ``ref`` an error (default: env ``ILSGAN_STRICT``).

    Returns:
        A tensor of the shape, dtype and memory format of ``x`` (``x`` itself when the op is the
        identity: linear, no bias, gain 1, no clamp). First- and second-order gradients with
        respect to ``x`` and ``b`` on every backend.
    """
    check_tensor("bias_act", "x", x)
    spec, alpha, gain, clamp = parse_activation("bias_act", act, alpha, gain, clamp)
    clamp = -1.0 if clamp is None else clamp  # the kernels' "no clamp"
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"bias_act: dim must be an int, got {type(dim).__name__}")
    if b is not None:
        check_tensor("bias_act", "b", b, 1, like=x, same_dtype=True)
        if x.dim() == 0:
            raise ValueError("bias_act: x must have at least one dimension when b is given")
        if not -x.dim() <= dim < x.dim():
            raise ValueError(f"bias_act: dim={dim} is out of range for x with {x.dim()} dimensions")
        dim = dim % x.dim()
        if b.shape[0] != x.shape[dim]:
            raise ValueError(
                f"bias_act: b has length {b.shape[0]} but x.shape[{dim}] = {x.shape[dim]} (dim={dim})"
            )
    else:
        dim = 0

    huge = x.is_cuda and bool(x.numel() >= 2**31)  # only the cuda kernels care: no size guard elsewhere
    backend = resolve_backend("bias_act", impl, x.device.type, strict, x.dtype, huge)
    if backend == "ref":
        return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    if act == "linear" and b is None and gain == 1 and clamp < 0:
        return x
    x = x.contiguous(memory_format=memory_format_of(x))
    if b is not None:
        b = b.contiguous()
    if torch.compiler.is_compiling():
        return _bias_act_op(x, b, dim, spec.index, alpha, gain, clamp, backend)
    if not needs_autograd(x, b):
        if x.numel() == 0:
            return torch.empty_like(x)
        return kernels(SPEC, backend).bias_act_fwd(x, b, dim, spec.index, alpha, gain, clamp)
    return _BiasActFn.apply(x, b, dim, spec.index, alpha, gain, clamp, backend)
