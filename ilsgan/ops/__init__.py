"""The hot paths of ILSGAN, one public function per op.

Every op takes ``impl="auto" | "ref" | "cpu" | "cuda" | "triton"`` and ``strict=None``; see
``../shared/spec/OPS.md`` in the repository and :func:`backend_info` for what runs where.
"""

from ._dispatch import BACKENDS, BackendUnavailableError, backend_info, format_backend_info, strict_from_env

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "backend_info",
    "format_backend_info",
    "strict_from_env",
]
