"""Shared test set-up.

Without a GPU, Triton kernels run through the Triton interpreter on CPU tensors; the variable
must be set before any ``@triton.jit`` function is defined, hence here, before test modules load.

Backends that must run (a skip would hide a broken build) fail instead of skipping. By default
those are ``cpu`` and ``triton`` (the README's install builds the one and installs the other), plus
``cuda`` when a GPU is present. ``ILSGAN_TEST_REQUIRE`` overrides the list (comma-separated; empty
for none), e.g. ``ILSGAN_TEST_REQUIRE= pytest`` on a machine without Triton.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_DEFAULT_REQUIRED = "cpu,triton,cuda" if torch.cuda.is_available() else "cpu,triton"
REQUIRED_BACKENDS = {b for b in os.environ.get("ILSGAN_TEST_REQUIRE", _DEFAULT_REQUIRED).split(",") if b}


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
