"""Backend selection for every ilsgan op.

Each op names the backends that implement it and, per device type, the order in which
``impl="auto"`` tries them. Whether a backend can run is decided by facts about this process
(is the compiled extension importable, is there a GPU, is Triton installed) plus optional
per-call limits of the kernel (e.g. a dtype it does not handle). Nothing here compiles.

``auto`` that ends up on ``ref`` while the op has a fast backend for that device is a
*fallback*: it warns once per (op, device, reason), and in strict mode (``strict=True`` or the
environment variable ``ILSGAN_STRICT=1``) it raises :class:`BackendUnavailableError` instead.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from . import _extensions

BACKENDS: Tuple[str, ...] = ("ref", "cpu", "cuda", "triton")
IMPLS: Tuple[str, ...] = ("auto",) + BACKENDS


class BackendUnavailableError(RuntimeError):
    """A backend was required (by ``impl=`` or by strict mode) but cannot run; the message says why."""


def strict_from_env() -> bool:
    return os.environ.get("ILSGAN_STRICT", "0").strip().lower() in ("1", "true", "yes", "on")


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_reason(device_type: str) -> Optional[str]:
    if importlib.util.find_spec("triton") is None:
        return "the 'triton' package is not installed"
    if device_type == "cuda":
        return None
    if device_type == "cpu":
        if triton_interpreting():
            return None
        return "Triton runs CPU tensors only under the interpreter (set TRITON_INTERPRET=1 before import)"
    return f"Triton does not run on {device_type} tensors"


def backend_reason(backend: str, device_type: str) -> Optional[str]:
    """Why ``backend`` cannot run on ``device_type`` tensors in this process, or None if it can."""
    if backend == "ref":
        return None
    if backend == "cpu":
        if device_type != "cpu":
            return f"the cpu backend runs on CPU tensors only, got {device_type} tensors"
        return _extensions.cpu_unavailable_reason()
    if backend == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs on CUDA tensors only, got {device_type} tensors"
        return _extensions.cuda_unavailable_reason()
    if backend == "triton":
        return _triton_reason(device_type)
    raise ValueError(f"unknown backend {backend!r}")


@dataclass(frozen=True)
class OpSpec:
    """Which backends implement an op, and the order ``auto`` tries them per device type."""

    name: str
    backends: Tuple[str, ...]
    auto_order: Dict[str, Tuple[str, ...]] = field(
        default_factory=lambda: {"cpu": ("cpu",), "cuda": ("cuda", "triton")}
    )

    def reason(self, backend: str, device_type: str) -> Optional[str]:
        if backend not in self.backends:
            return f"{self.name} has no {backend} implementation"
        return backend_reason(backend, device_type)


_REGISTRY: Dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    _REGISTRY[spec.name] = spec
    return spec


_warned: set = set()


def resolve(
    spec: OpSpec,
    impl: str,
    device: torch.device,
    strict: Optional[bool] = None,
    unsupported: Optional[Callable[[str], Optional[str]]] = None,
) -> str:
    """Pick the backend for one call.

    ``unsupported(backend)`` may return a reason why that backend's kernel cannot handle this
    particular call (dtype, filter size, ...); None means it can.
    """
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"{spec.name}: impl must be one of {IMPLS}, got {impl!r}")
    if strict is None:
        strict = strict_from_env()
    device_type = torch.device(device).type

    def why_not(backend: str) -> Optional[str]:
        reason = spec.reason(backend, device_type)
        if reason is None and unsupported is not None:
            reason = unsupported(backend)
        return reason

    if impl != "auto":
        reason = why_not(impl)
        if reason is not None:
            raise BackendUnavailableError(f"{spec.name}: impl={impl!r} cannot run: {reason}")
        return impl

    candidates = spec.auto_order.get(device_type, ())
    reasons = []
    for backend in candidates:
        reason = why_not(backend)
        if reason is None:
            return backend
        reasons.append(f"{backend}: {reason}")
    if not candidates:
        # No fast backend is designed for this device: ref is the intended path, not a fallback.
        return "ref"
    msg = f"{spec.name}: falling back to the slow 'ref' backend on {device_type} tensors ({'; '.join(reasons)})"
    if strict:
        raise BackendUnavailableError(msg + "; strict mode forbids fallbacks")
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return "ref"


def backend_info(ops: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Dict[str, object]]]:
    """Per op and device type: the backend ``auto`` picks and why each other backend is unavailable.

    Returns ``{op: {"cpu": {"auto": name, "unavailable": {backend: reason}}, "cuda": {...}}}``.
    Per-call limits (dtype, shapes) are not included: those are reported when a call hits them.
    """
    from . import load_all_ops  # op modules register themselves on import

    load_all_ops()
    names = list(ops) if ops is not None else sorted(_REGISTRY)
    info: Dict[str, Dict[str, Dict[str, object]]] = {}
    for name in names:
        if name not in _REGISTRY:
            raise ValueError(f"backend_info: unknown op {name!r}; known ops: {sorted(_REGISTRY)}")
        spec = _REGISTRY[name]
        per_device = {}
        for device_type in ("cpu", "cuda"):
            unavailable = {}
            for backend in BACKENDS:
                reason = spec.reason(backend, device_type)
                if reason is not None:
                    unavailable[backend] = reason
            if device_type == "cuda" and not torch.cuda.is_available():
                auto = "none (no CUDA device)"
            else:
                auto = next((b for b in spec.auto_order.get(device_type, ()) if b not in unavailable), "ref")
            per_device[device_type] = {"auto": auto, "unavailable": unavailable}
        info[name] = per_device
    return info


def format_backend_info(info: Optional[Dict] = None) -> str:
    """A human-readable table of :func:`backend_info`."""
    info = backend_info() if info is None else info
    lines = []
    for name, per_device in info.items():
        for device_type, entry in per_device.items():
            lines.append(f"{name:<20} {device_type:<5} auto -> {entry['auto']}")
            for backend, reason in entry["unavailable"].items():
                lines.append(f"{'':<20} {'':<5}   {backend}: {reason}")
    return "\n".join(lines)
