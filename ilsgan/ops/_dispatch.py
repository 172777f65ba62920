"""Backend selection and kernel lookup for every ilsgan op.

Each op describes itself with one :class:`OpSpec`: the backends that implement it, the kernels
every fast backend provides, what its kernels cannot handle in one call, and per device type the
order in which ``impl="auto"`` tries the backends. Whether a backend can run is decided by facts
about this process (is the compiled extension importable, is there a GPU, is Triton installed,
does the loaded build have the op's kernels) plus those per-call limits (e.g. a dtype the kernels
do not handle). Nothing here compiles. :func:`resolve_backend` picks the backend of one call and
:func:`kernels` hands out the backend's kernel functions.

``auto`` that ends up on ``ref`` while the op has a fast backend for that device is a
*fallback*: it warns once per (op, device, reason), and in strict mode (``strict=True`` or the
environment variable ``ILSGAN_STRICT=1``) it raises :class:`BackendUnavailableError` instead.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from . import _extensions

BACKENDS: Tuple[str, ...] = ("ref", "cpu", "cuda", "triton")
IMPLS: Tuple[str, ...] = ("auto",) + BACKENDS
# What the fast kernels compute in (16-bit types in float32); other dtypes run on ref.
FLOAT_DTYPES: Tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class BackendUnavailableError(RuntimeError):
    """A backend was required (by ``impl=`` or by strict mode) but cannot run; the message says why."""


def strict_from_env() -> bool:
    return os.environ.get("ILSGAN_STRICT", "0").strip().lower() in ("1", "true", "yes", "on")


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_reason(device_type: str) -> Optional[str]:
    if importlib.util.find_spec("triton") is None:
        return "the 'triton' package is not installed (pip install 'ilsgan[triton]')"
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


# Per-call limits of an op's kernels: (backend, device_type, dtype, huge) -> why not, or None.
# ``huge``: the call has 2^31 elements or more.
Limits = Callable[[str, str, torch.dtype, bool], Optional[str]]


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity (one spec per op)
class OpSpec:
    """An op: its backends, its kernels, their per-call limits, and ``auto``'s order per device type.

    ``kernels`` are the names every fast backend provides: ``torch.ops.ilsgan_cpu.<name>``,
    ``torch.ops.ilsgan_cuda.<name>`` and ``ilsgan.kernels.<triton_module>.<name>``; ``cpu_kernels``
    are further ones only the cpu extension has. ``limits`` is called for the fast backends only,
    after the dtype check against :data:`FLOAT_DTYPES`.
    """

    name: str
    backends: Tuple[str, ...]
    kernels: Tuple[str, ...] = ()
    triton_module: Optional[str] = None
    cpu_kernels: Tuple[str, ...] = ()
    limits: Optional[Limits] = None
    auto_order: Dict[str, Tuple[str, ...]] = field(
        default_factory=lambda: {"cpu": ("cpu",), "cuda": ("cuda", "triton")}
    )

    def reason(self, backend: str, device_type: str) -> Optional[str]:
        """Why ``backend`` cannot run this op on ``device_type`` tensors in this process, or None."""
        if backend not in self.backends:
            return f"{self.name} has no {backend} implementation"
        reason = backend_reason(backend, device_type)
        if reason is None and backend != "ref":
            reason = _kernels_missing(self, backend)
        return reason

    def kernel_names(self, backend: str) -> Tuple[str, ...]:
        return self.kernels + (self.cpu_kernels if backend == "cpu" else ())

    def call_limit(self, backend: str, device_type: str, dtype: torch.dtype, huge: bool = False) -> Optional[str]:
        """Why ``backend``'s kernels cannot take a call with this dtype and size, or None if they can."""
        if backend == "ref":
            return None
        if dtype not in FLOAT_DTYPES:
            return f"dtype {dtype} not handled"
        return None if self.limits is None else self.limits(backend, device_type, dtype, huge)


@functools.lru_cache(maxsize=None)
def _kernels_missing(spec: OpSpec, backend: str) -> Optional[str]:
    """Why the loaded build cannot serve ``spec`` on ``backend`` (a stale or partial build), or None.
    Asked only once the backend itself can run (the extension is importable, triton is installed)."""
    if backend in ("cpu", "cuda"):
        ns = getattr(torch.ops, f"ilsgan_{backend}")
        if not all(hasattr(ns, k) for k in spec.kernel_names(backend)):
            return f"the loaded ilsgan {backend} extension has no {spec.name} kernels (rebuild it: tools/build.sh)"
    elif backend == "triton" and spec.kernels:
        if importlib.util.find_spec(f"ilsgan.kernels.{spec.triton_module}") is None:
            return f"ilsgan.kernels.{spec.triton_module} is missing"
    return None


_LOADED: Dict[Tuple[OpSpec, str], SimpleNamespace] = {}


def kernels(spec: OpSpec, backend: str) -> SimpleNamespace:
    """The kernel functions of ``spec`` on ``backend`` (``cpu``, ``cuda`` or ``triton``), as attributes
    named as in ``spec.kernels``; loaded on first use, then cached."""
    k = _LOADED.get((spec, backend))
    if k is None:
        if backend == "cpu":
            source = _extensions.cpu_ops()
        elif backend == "cuda":
            source = _extensions.cuda_ops()
        elif backend == "triton":  # imports triton: only ever reached once the backend was resolved
            source = importlib.import_module(f"ilsgan.kernels.{spec.triton_module}")
        else:
            raise ValueError(f"{spec.name}: no kernels for backend {backend!r}")
        k = SimpleNamespace(**{name: getattr(source, name) for name in spec.kernel_names(backend)})
        _LOADED[(spec, backend)] = k
    return k


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


_RESOLVED: Dict[tuple, str] = {}


@torch.compiler.assume_constant_result
def resolve_backend(
    op: str, impl: str, device_type: str, strict: Optional[bool], dtype: torch.dtype, huge: bool
) -> str:
    """The backend of one call of the registered op ``op`` on ``device_type`` tensors of ``dtype``
    (``huge``: 2^31 elements or more); raises like :func:`resolve`.

    The answer depends on facts about the process and on these arguments only, so it is cached, and
    evaluated eagerly while torch.compile traces (tracing into the extension loader would break
    the graph). A fallback warns once anyway.
    """
    if not isinstance(impl, str):
        raise ValueError(f"{op}: impl must be one of {IMPLS}, got {type(impl).__name__} {impl!r}")
    if strict is None:
        strict = strict_from_env()
    spec = _REGISTRY[op]
    key = (spec, impl, device_type, strict, dtype, huge)
    backend = _RESOLVED.get(key)
    if backend is None:
        backend = _RESOLVED[key] = resolve(
            spec, impl, torch.device(device_type), strict, lambda b: spec.call_limit(b, device_type, dtype, huge)
        )
    return backend


def needs_autograd(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether an eager call must record a graph: grad mode is on and an input requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
