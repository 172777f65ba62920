"""Loading the ahead-of-time compiled extensions built by ``setup.py``.

``ilsgan._C`` holds the CPU kernels (registered as ``torch.ops.ilsgan_cpu.*``) and
``ilsgan._C_cuda`` the CUDA kernels (``torch.ops.ilsgan_cuda.*``). They are imported once, on
first need; a missing one is recorded with the reason and never compiled here.
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


@functools.lru_cache(maxsize=None)
def kernels_missing(op: str, backend: str, kernels: tuple, triton_module: str) -> Optional[str]:
    """Why the loaded extension (``cpu``/``cuda``: it lacks one of ``kernels``) or the Triton module
    ``ilsgan.kernels.<triton_module>`` cannot serve ``op`` (a stale or partial build); None if it can."""
    if backend in ("cpu", "cuda"):
        ns = getattr(torch.ops, f"ilsgan_{backend}")
        if not all(hasattr(ns, k) for k in kernels):
            return f"the loaded ilsgan {backend} extension has no {op} kernels (rebuild it: tools/build.sh)"
    elif backend == "triton":
        import importlib.util

        if importlib.util.find_spec(f"ilsgan.kernels.{triton_module}") is None:
            return f"ilsgan.kernels.{triton_module} is missing"
    return None


def match_strides(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly the strides of the dense tensor ``like`` (a copy only when they differ):
    kernels that index both by the same offsets need one layout."""
    if t.stride() == like.stride():
        return t
    out = torch.empty_like(like, dtype=t.dtype)
    out.copy_(t)
    return out
