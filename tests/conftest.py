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


# bfloat16 checks (cpu kernels vs ref): a bf16 result against the float64 ref evaluated on the same
# (upcast) bf16 inputs. With float32 math inside and one rounding of the output, an element is off
# by ~2^-9 of its size; 1e-2 of the size plus 1e-2 of the largest element leaves room for the
# roundings between ops. ``norm=True``: the relative L2 error instead (for gradients behind an
# activation kink or a clamp, where the bf16 rounding of an input may flip single elements).
BF16_RTOL = 1e-2


def bf16_randn(*shape, seed=0, scale=1.0, noncontig=False):
    """Fresh random bfloat16 values (never exactly zero); ``noncontig``: a strided slice of them."""
    g = torch.Generator().manual_seed(seed)
    full = list(shape)
    if noncontig:
        full[-1] *= 2
    x = torch.randn(full, generator=g, dtype=torch.float64) * scale
    x = torch.where(x.abs() < 1e-3 * scale, torch.full_like(x, 1e-3 * scale), x).to(torch.bfloat16)
    if noncontig:
        x = x[..., ::2]
        assert not x.is_contiguous()
    return x


def assert_close_bf16(got, want, what="", rtol=BF16_RTOL, norm=False, atol=None):
    """Elementwise within ``rtol`` of the value plus ``atol`` (default: ``rtol`` of the largest
    element); ``norm=True``: relative L2 error within ``rtol``."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    if norm:
        err = (got - want).norm() / want.norm().clamp_min(1e-30)
        assert err <= rtol, f"{what}: relative L2 error {err:.3g} > {rtol}"
        return
    atol = rtol * want.abs().max().item() if atol is None else atol
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def bf16_vs_ref64(fn, inputs, cotangents, what, out_names, out_dtype=torch.bfloat16, tol=None):
    """The cpu backend on bfloat16 against ref in float64 on the same values.

    ``fn(**inputs, impl=impl)`` returns a tensor or a tuple of tensors (named ``out_names``). The cpu
    run takes ``inputs`` as given (bfloat16 activations, float32 parameters where the op takes
    them); the ref run takes every floating input in float64. Both differentiate
    ``sum_k (out_k * cotangents[k]).sum()`` (a ``None`` cotangent leaves that output out) with
    respect to every floating input. Checks: outputs have ``out_dtype``, each gradient has its
    input's dtype, and each output and gradient (named like its input) is close to ref by
    :func:`assert_close_bf16` with the keyword arguments ``tol[name]`` (default: ``BF16_RTOL``
    elementwise). Returns ``{name: (cpu value, ref value)}``.
    """
    tol = tol or {}
    res = {}
    for impl in ("cpu", "ref"):
        leaves = {k: v if v is None or not v.is_floating_point()
                  else v.detach().to(v.dtype if impl == "cpu" else torch.float64).requires_grad_(True)
                  for k, v in inputs.items()}
        outs = fn(**leaves, impl=impl)
        outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
        assert len(outs) == len(out_names) == len(cotangents), what
        diff = [k for k, v in leaves.items() if v is not None and v.requires_grad]
        loss = sum((o * c.to(o.dtype)).sum() for o, c in zip(outs, cotangents) if c is not None)
        grads = torch.autograd.grad(loss, [leaves[k] for k in diff], allow_unused=True)
        res[impl] = dict(zip(out_names, outs), **dict(zip(diff, grads)))
    pairs = {k: (res["cpu"][k], res["ref"][k]) for k in res["ref"]}
    for name, (got, want) in pairs.items():
        assert got is not None and want is not None, f"{what} {name}: no gradient"
        dtype = out_dtype if name in out_names else inputs[name].dtype
        assert got.dtype == dtype, f"{what} {name}: dtype {got.dtype}, expected {dtype}"
        assert_close_bf16(got, want, f"{what} {name}", **tol.get(name, {}))
    return pairs
