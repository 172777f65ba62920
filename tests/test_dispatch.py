import warnings

import pytest
import torch

from ilsgan.ops import BackendUnavailableError, backend_info, format_backend_info
from ilsgan.ops._dispatch import OpSpec, resolve

SPEC = OpSpec(name="dummy_op", backends=("ref", "cpu", "cuda", "triton"))
NO_FAST = OpSpec(name="dummy_nofast", backends=("ref",), auto_order={"cpu": ("cpu",), "cuda": ("cuda",)})


def test_bad_impl_names_argument():
    with pytest.raises(ValueError, match="impl"):
        resolve(SPEC, "fast", torch.device("cpu"))


def test_forced_backend_that_cannot_run_raises_documented_error():
    with pytest.raises(BackendUnavailableError, match="impl='cuda'.*CUDA tensors only"):
        resolve(SPEC, "cuda", torch.device("cpu"))
    with pytest.raises(BackendUnavailableError, match="no triton implementation"):
        resolve(NO_FAST, "triton", torch.device("cpu"))


def test_ref_always_runs():
    assert resolve(SPEC, "ref", torch.device("cpu")) == "ref"


def test_fallback_warns_and_strict_raises(monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve(NO_FAST, "auto", torch.device("cpu"), strict=False) == "ref"
    assert any("falling back" in str(w.message) for w in caught)
    with pytest.raises(BackendUnavailableError, match="strict mode"):
        resolve(NO_FAST, "auto", torch.device("cpu"), strict=True)
    monkeypatch.setenv("ILSGAN_STRICT", "1")
    with pytest.raises(BackendUnavailableError, match="strict mode"):
        resolve(NO_FAST, "auto", torch.device("cpu"))


def test_per_call_limits_are_reported():
    with pytest.raises(BackendUnavailableError, match="bfloat16 not handled"):
        resolve(SPEC, "cpu", torch.device("cpu"), unsupported=lambda b: "bfloat16 not handled")


def test_backend_info_lists_every_registered_op():
    info = backend_info()
    for name, per_device in info.items():
        assert set(per_device) == {"cpu", "cuda"}
        for entry in per_device.values():
            assert isinstance(entry["auto"], str)
            assert all(isinstance(r, str) and r for r in entry["unavailable"].values())
    assert isinstance(format_backend_info(info), str)
    with pytest.raises(ValueError, match="unknown op"):
        backend_info(["no_such_op"])
