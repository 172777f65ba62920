"""Loading the ahead-of-time compiled extensions built by ``setup.py``.

``ilsgan._C`` holds the CPU kernels (registered as ``torch.ops.ilsgan_cpu.*``) and
``ilsgan._C_cuda`` the CUDA kernels (``torch.ops.ilsgan_cuda.*``). They are imported once, on
first need; a missing one is recorded with the reason and never compiled here. Also the layout
helpers of the kernels' callers (:func:`memory_format_of`, :func:`match_strides`).
"""

from __future__ import annotations

import functools
import importlib
from typing import Optional

import torch


@functools.lru_cache(maxsize=None)
def _load(module: str) -> Optional[str]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return (
            f"extension {module} is not importable ({exc}); it is built ahead of time by "
            "'pip install -e . --no-build-isolation'"
        )
    return None


def cpu_unavailable_reason() -> Optional[str]:
    return _load("ilsgan._C")


def cuda_unavailable_reason() -> Optional[str]:
    if not torch.cuda.is_available():
        return "no CUDA device is available to torch"
    return _load("ilsgan._C_cuda")


def cpu_ops():
    """``torch.ops.ilsgan_cpu``, after making sure the extension is loaded."""
    reason = cpu_unavailable_reason()
    if reason is not None:
        from ._dispatch import BackendUnavailableError

        raise BackendUnavailableError(reason)
    return torch.ops.ilsgan_cpu


def cuda_ops():
    """``torch.ops.ilsgan_cuda``, after making sure the extension is loaded."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        from ._dispatch import BackendUnavailableError

        raise BackendUnavailableError(reason)
    return torch.ops.ilsgan_cuda


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The dense layout the fast kernels keep: channels_last for a 4-D tensor that is channels_last-
    but not NCHW-contiguous, else NCHW (any other strided input is copied to NCHW)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def match_strides(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly the strides of the dense tensor ``like`` (a copy only when they differ):
    kernels that index both by the same offsets need one layout."""
    if t.stride() == like.stride():
        return t
    out = torch.empty_like(like, dtype=t.dtype)
    out.copy_(t)
    return out
