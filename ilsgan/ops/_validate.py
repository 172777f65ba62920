"""Argument checks and parsers shared by the ops; every message names the op and the argument."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ._activations import ACTIVATIONS, Activation


def as_float(op: str, name: str, value, allow_inf: bool = False) -> float:
    """``value`` (a Python or NumPy number, or a one-element tensor that does not require grad) as a
    finite float (or ±inf if allowed). The value is a constant of the kernels: never differentiated."""
    if isinstance(value, Tensor) and value.numel() == 1:
        if value.requires_grad:
            raise ValueError(f"{op}: {name} must not require grad (it is used as a constant); pass a number")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return value


def parse_activation(op: str, act, alpha, gain, clamp) -> Tuple[Activation, float, float, Optional[float]]:
    """``(activation, alpha, gain, clamp)`` with the activation's defaults for ``None`` alpha and gain;
    ``clamp`` is None (no clamp) or a float >= 0 (may be inf)."""
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ValueError(f"{op}: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else as_float(op, "alpha", alpha)
    gain = spec.def_gain if gain is None else as_float(op, "gain", gain)
    if clamp is not None:
        clamp = as_float(op, "clamp", clamp, allow_inf=True)
        if clamp < 0:
            raise ValueError(f"{op}: clamp must be >= 0 (or None to disable), got {clamp}")
    return spec, alpha, gain, clamp


def check_bool(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_factor(op: str, name: str, value) -> int:
    """An integer resampling factor or group count, >= 1."""
    if not _is_int(value):
        raise TypeError(f"{op}: {name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}")
    return value


def parse_scaling(op: str, name: str, value) -> Tuple[int, int]:
    """``int`` or ``(x, y)`` -> ``(sx, sy)``, each >= 1."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints (x, y), got a bool")
    if isinstance(value, int):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) for v in value):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints (x, y), got {value!r}")
    sx, sy = int(value[0]), int(value[1])
    if sx < 1 or sy < 1:
        raise ValueError(f"{op}: {name} must be >= 1 along both axes, got {value!r}")
    return sx, sy


def parse_padding(op: str, name: str, value) -> Tuple[int, int, int, int]:
    """``int`` / ``[px, py]`` / ``[px0, px1, py0, py1]`` -> ``(px0, px1, py0, py1)`` (NVlabs order:
    left, right, top, bottom); negative values crop."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a list of 2 or 4 ints, got a bool")
    if isinstance(value, int):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 4) or not all(_is_int(v) for v in value):
        raise TypeError(
            f"{op}: {name} must be an int, [px, py] or [px0, px1, py0, py1] (ints), got {value!r}"
        )
    if len(value) == 2:
        px, py = value
        value = [px, px, py, py]
    px0, px1, py0, py1 = (int(v) for v in value)
    return px0, px1, py0, py1


def check_filter(op: str, name: str, f, device: Optional[torch.device] = None) -> None:
    """A FIR filter as :func:`ilsgan.ops.setup_filter` makes it: float32, ``[taps]`` (separable) or
    ``[fh, fw]``, never differentiated, on ``device`` when given; ``None`` (identity) passes."""
    if f is None:
        return
    if not isinstance(f, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(f).__name__}")
    if f.dim() not in (1, 2):
        raise ValueError(f"{op}: {name} must be 1-D [taps] (separable) or 2-D [fh, fw], got shape {tuple(f.shape)}")
    if f.numel() == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {tuple(f.shape)}")
    if f.dtype != torch.float32:
        raise TypeError(f"{op}: {name} must be float32 (see setup_filter), got dtype {f.dtype}")
    if f.requires_grad:
        raise ValueError(f"{op}: {name} must not require grad (the filter is never differentiated); "
                         f"pass {name}.detach()")
    if device is not None and f.device != device:
        raise ValueError(f"{op}: {name} is on {f.device} but x is on {device}; they must be on the same device")


def filter_size(f: Optional[Tensor]) -> Tuple[int, int]:
    """``(fw, fh)``; a 1-D (separable) filter has ``taps`` along both axes, ``None`` is 1x1."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def check_tensor(op: str, name: str, t, ndim: Optional[int] = None, like: Optional[Tensor] = None,
                 like_name: str = "x", same_dtype: bool = False) -> None:
    """``t`` is a floating-point tensor (with ``ndim`` dimensions; on ``like``'s device, and with
    ``same_dtype`` of ``like``'s dtype)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        layout = " [N, C, H, W]" if ndim == 4 else ""
        raise ValueError(f"{op}: {name} must be {ndim}-D{layout}, got shape {tuple(t.shape)}")
    if like is not None and t.device != like.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {like_name} is on {like.device}; "
                         "they must be on one device")
    if same_dtype and t.dtype != like.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype} but {like_name} has dtype {like.dtype}; they must match")


def check_layers(op: str, f, b, m) -> None:
    """Foreground and background ``[N, C, H, W]`` and mask ``[N, 1, H, W]``: one dtype, one device."""
    check_tensor(op, "f", f, 4)
    check_tensor(op, "b", b, 4, like=f, like_name="f", same_dtype=True)
    check_tensor(op, "m", m, 4, like=f, like_name="f", same_dtype=True)
    if b.shape != f.shape:
        raise ValueError(f"{op}: b must have the shape of f {tuple(f.shape)}, got {tuple(b.shape)}")
    n, _, h, w = f.shape
    if tuple(m.shape) != (n, 1, h, w):
        raise ValueError(f"{op}: m must have shape [N, 1, H, W] = {(n, 1, h, w)}, got {tuple(m.shape)}")


def check_index_tensor(op: str, name: str, t, shape: Tuple[int, ...], like: Tensor, like_name: str = "f") -> Tensor:
    """An integer tensor of ``shape`` on ``like``'s device, returned as contiguous int64."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{op}: {name} must be an integer tensor, got dtype {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        dims = "[N]" if len(shape) == 1 else "[N, 2]"
        raise ValueError(f"{op}: {name} must have shape {dims} = {list(shape)}, got {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {like_name} is on {like.device}; "
                         "they must be on one device")
    return t.to(torch.long).contiguous()
