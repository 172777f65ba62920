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
