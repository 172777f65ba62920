"""The hot paths of ILSGAN, one public function per op.

Every op takes ``impl="auto" | "ref" | "cpu" | "cuda" | "triton"`` and ``strict=None``; its
semantics are in the docstring of its function, and :func:`backend_info` says what runs where.

Op modules are imported on first use of one of their names, so ``import ilsgan.ops`` stays cheap
and never touches a compiled extension.
"""

import importlib
from typing import Dict, Optional, Sequence

from ._dispatch import BACKENDS, BackendUnavailableError, backend_info, format_backend_info, strict_from_env

# public name -> module of ilsgan.ops that defines it
_EXPORTS: Dict[str, str] = {
    "ACTIVATIONS": "_activations",
    "bias_act": "_bias_act",
    "upfirdn2d": "_upfirdn2d",
    "setup_filter": "_upfirdn2d",
    "filter2d": "_upfirdn2d",
    "upsample2d": "_upfirdn2d",
    "downsample2d": "_upfirdn2d",
    "conv2d_resample": "_conv2d_resample",
    "modulated_conv2d": "_modulated_conv2d",
    "composite": "_composite",
    "ils_terms": "_ils_terms",
    "mask_terms": "_ils_terms",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ilsgan.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


def load_all_ops() -> None:
    """Import every op module, registering its backends with the dispatcher."""
    for module in sorted(set(_EXPORTS.values())):
        importlib.import_module(f"{__name__}.{module}")


__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "backend_info",
    "format_backend_info",
    "load_all_ops",
    "strict_from_env",
    *_EXPORTS,
]
