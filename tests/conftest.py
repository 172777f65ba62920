"""Shared test set-up.

Without a GPU, Triton kernels run through the Triton interpreter on CPU tensors; the variable
must be set before any ``@triton.jit`` function is defined, hence here, before test modules load.

``ILSGAN_TEST_REQUIRE`` (comma-separated backends, e.g. ``cpu,triton``; CI sets it) turns a
backend that cannot run from a skip into a failure, so a broken build cannot pass as "skipped".
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REQUIRED_BACKENDS = {b for b in os.environ.get("ILSGAN_TEST_REQUIRE", "").split(",") if b}


def test_device(backend: str) -> torch.device:
    """The device a backend is tested on: CUDA for cuda, CUDA if present else CPU for triton."""
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def require_backend(spec, backend: str) -> torch.device:
    """Skip (or fail, when required) unless ``backend`` of op ``spec`` can run; return its device."""
    device = test_device(backend)
    reason = spec.reason(backend, device.type)
    if reason is not None:
        if backend in REQUIRED_BACKENDS:
            pytest.fail(f"{spec.name}: required backend {backend!r} cannot run: {reason}")
        pytest.skip(f"{spec.name}/{backend}: {reason}")
    return device
