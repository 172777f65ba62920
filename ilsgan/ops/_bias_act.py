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

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ._validate import as_float
from ._extensions import kernels_missing, match_strides
from ._dispatch import OpSpec, register_op, resolve, strict_from_env

__all__ = ["bias_act", "ACTIVATIONS", "SPEC"]

SPEC = register_op(OpSpec("bias_act", ("ref", "cpu", "cuda", "triton")))


class _Act(NamedTuple):
    index: int  # kernel id, shared by all backends (same numbering as NVlabs' cuda_idx)
    def_alpha: float
    def_gain: float
    ref: str  # what the first-order gradient kernel reads: "" (nothing), "y" (output) or "x" (input)
    has_2nd_grad: bool


ACTIVATIONS = {
    "linear": _Act(1, 0.0, 1.0, "", False),
    "relu": _Act(2, 0.0, math.sqrt(2), "y", False),
    "lrelu": _Act(3, 0.2, math.sqrt(2), "y", False),
    "tanh": _Act(4, 0.0, 1.0, "y", True),
    "sigmoid": _Act(5, 0.0, 1.0, "y", True),
    "elu": _Act(6, 0.0, 1.0, "y", True),
    "selu": _Act(7, 0.0, 1.0, "y", True),
    "softplus": _Act(8, 0.0, 1.0, "y", True),
    "swish": _Act(9, 0.0, math.sqrt(2), "x", True),
}
_INDEX_TO_ACT = {a.index: a for a in ACTIVATIONS.values()}

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------------------------------------
# Reference (plain torch): the oracle, differentiable to any order.


def _act_ref(name: str, x: Tensor, alpha: float) -> Tensor:
    F = torch.nn.functional
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "lrelu":
        return F.leaky_relu(x, alpha)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "elu":
        return F.elu(x)  # NVlabs: alpha is ignored (always 1)
    if name == "selu":
        return F.selu(x)
    if name == "softplus":
        return F.softplus(x)
    if name == "swish":
        return torch.sigmoid(x) * x
    raise AssertionError(name)


def _bias_act_ref(x: Tensor, b: Optional[Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float) -> Tensor:
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = _act_ref(act, x, alpha)
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


_KERNELS = {}


def _kernels(backend: str):
    k = _KERNELS.get(backend)
    if k is None:
        k = _KERNELS[backend] = _load_kernels(backend)
    return k


def _load_kernels(backend: str):
    if backend == "cpu":
        from ._extensions import cpu_ops

        ops = cpu_ops()
        return ops.bias_act_fwd, ops.bias_act_grad
    if backend == "cuda":
        from ._extensions import cuda_ops

        ops = cuda_ops()
        return ops.bias_act_fwd, ops.bias_act_grad
    if backend == "triton":
        from ilsgan.kernels import bias_act as tk

        return tk.bias_act_fwd, tk.bias_act_grad
    raise ValueError(f"bias_act: no kernels for backend {backend!r}")


def _layout_of(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.stride(1) == 1:
        return torch.channels_last
    return torch.contiguous_format


@torch.library.custom_op("ilsgan::bias_act", mutates_args=())
def _bias_act_op(
    x: Tensor, b: Optional[Tensor], dim: int, act: int, alpha: float, gain: float, clamp: float, backend: str
) -> Tensor:
    if x.numel() == 0:
        return torch.empty_like(x)
    fwd, _ = _kernels(backend)
    return fwd(x, b, dim, act, alpha, gain, clamp)


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
    _, grad = _kernels(backend)
    return grad(g, x, b, y, dy, order, dim, act, alpha, gain, clamp, need_db)


def _grad_fake(g, x, b, y, dy, dim, need_db):
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
    return _grad_fake(dy, x, b, y, None, dim, need_db)


@torch.library.custom_op("ilsgan::bias_act_grad2", mutates_args=())
def _bias_act_grad2_op(
    g: Tensor, dy: Tensor, x: Optional[Tensor], b: Optional[Tensor], y: Optional[Tensor], dim: int, act: int,
    alpha: float, gain: float, clamp: float, need_db: bool, backend: str,
) -> Tuple[Tensor, Tensor]:
    return _grad_impl(g, x, b, y, dy, 2, dim, act, alpha, gain, clamp, need_db, backend)


@_bias_act_grad2_op.register_fake
def _(g, dy, x, b, y, dim, act, alpha, gain, clamp, need_db, backend):
    return _grad_fake(g, x, b, y, dy, dim, need_db)


def _saves(act: int, alpha: float, clamp: float):
    """(save x and b, save y) for the gradient of the forward op."""
    spec = _INDEX_TO_ACT[act]
    if spec.index == 3 and alpha < 0:  # lrelu with a negative slope: sign of y says nothing, use x
        return True, False
    save_x = spec.ref == "x" or spec.has_2nd_grad
    save_y = spec.ref == "y" or (clamp >= 0 and spec.ref != "x")
    return save_x, save_y


def _fwd_setup(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp, backend = inputs
    save_x, save_y = _saves(act, alpha, clamp)
    ctx.args = (dim, act, alpha, gain, clamp, backend)
    ctx.has_b = b is not None
    ctx.save_for_backward(x if save_x else None, b if save_x else None, output if save_y else None)
    ctx.fmt = _layout_of(x)


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
        fwd, _ = _kernels(backend)
        y = fwd(x, b, dim, act, alpha, gain, clamp) if x.numel() else torch.empty_like(x)
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


def _kernel_missing(backend: str) -> Optional[str]:
    return kernels_missing("bias_act", backend, ("bias_act_fwd", "bias_act_grad"), "bias_act")


def _unsupported(x: Tensor, big: bool = False):
    def check(backend: str) -> Optional[str]:
        if backend != "ref" and x.dtype not in _FLOAT_DTYPES:
            return f"dtype {x.dtype} not handled"
        if backend == "cuda" and big:
            return "the cuda kernels take tensors of fewer than 2^31 elements (triton takes any size)"
        if backend != "ref":
            return _kernel_missing(backend)
        return None

    return check


_RESOLVED = {}


@torch.compiler.assume_constant_result
def _resolve(impl: str, device_type: str, strict: Optional[bool], dtype: torch.dtype, big: bool) -> str:
    # Evaluated eagerly (also while torch.compile traces): the choice depends on facts about the
    # process only, and tracing into the extension loader would break the graph.
    if strict is None:
        strict = strict_from_env()
    key = (impl, device_type, strict, dtype, big)
    backend = _RESOLVED.get(key)
    if backend is None:  # facts about the process only: cached (a fallback warns once anyway)
        probe = torch.empty(0, dtype=dtype)
        backend = _RESOLVED[key] = resolve(SPEC, impl, torch.device(device_type), strict, _unsupported(probe, big))
    return backend


def _as_float(name: str, value, allow_inf: bool = False) -> float:
    return as_float("bias_act", name, value, allow_inf)


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
    if not isinstance(x, Tensor):
        raise TypeError(f"bias_act: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"bias_act: x must be a floating-point tensor, got dtype {x.dtype}")
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ValueError(f"bias_act: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    spec = ACTIVATIONS[act]
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"bias_act: dim must be an int, got {type(dim).__name__}")
    alpha = spec.def_alpha if alpha is None else _as_float("alpha", alpha)
    gain = spec.def_gain if gain is None else _as_float("gain", gain)
    if clamp is None:
        clamp = -1.0
    else:
        clamp = _as_float("clamp", clamp, allow_inf=True)
        if clamp < 0:
            raise ValueError(f"bias_act: clamp must be >= 0 (or None to disable), got {clamp}")
    if b is not None:
        if not isinstance(b, Tensor):
            raise TypeError(f"bias_act: b must be a torch.Tensor or None, got {type(b).__name__}")
        if x.dim() == 0:
            raise ValueError("bias_act: x must have at least one dimension when b is given")
        if not -x.dim() <= dim < x.dim():
            raise ValueError(f"bias_act: dim={dim} is out of range for x with {x.dim()} dimensions")
        dim = dim % x.dim()
        if b.dim() != 1:
            raise ValueError(f"bias_act: b must be 1-D, got shape {tuple(b.shape)}")
        if b.shape[0] != x.shape[dim]:
            raise ValueError(
                f"bias_act: b has length {b.shape[0]} but x.shape[{dim}] = {x.shape[dim]} (dim={dim})"
            )
        if b.device != x.device:
            raise ValueError(f"bias_act: b is on {b.device} but x is on {x.device}")
        if b.dtype != x.dtype:
            raise TypeError(f"bias_act: b has dtype {b.dtype} but x has dtype {x.dtype}; they must match")
    else:
        dim = 0
    if not isinstance(impl, str):
        raise ValueError(f"bias_act: impl must be a string, got {type(impl).__name__}")

    backend = _resolve(impl, x.device.type, strict, x.dtype, x.is_cuda and bool(x.numel() >= 2**31))
    if backend == "ref":
        return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    if act == "linear" and b is None and gain == 1 and clamp < 0:
        return x
    x = x.contiguous(memory_format=_layout_of(x))
    if b is not None:
        b = b.contiguous()
    if torch.compiler.is_compiling():
        return _bias_act_op(x, b, dim, spec.index, alpha, gain, clamp, backend)
    if not torch.is_grad_enabled() or not (x.requires_grad or (b is not None and b.requires_grad)):
        if x.numel() == 0:
            return torch.empty_like(x)
        return _kernels(backend)[0](x, b, dim, spec.index, alpha, gain, clamp)
    return _BiasActFn.apply(x, b, dim, spec.index, alpha, gain, clamp, backend)
