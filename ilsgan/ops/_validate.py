"""Argument checks shared by the ops (messages name the op and the argument)."""

from __future__ import annotations

import math

from torch import Tensor


def as_float(op: str, name: str, value, allow_inf: bool = False) -> float:
    """``value`` (a Python number or a one-element tensor) as a finite float (or ±inf if allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return value
