"""composite (layer compositing, optionally with the per-sample shift of ILSGAN's perturbed
composition) at batch 32, 64x64 and 128x128, forward and forward+backward, for ref,
torch.compile(ref) and the fast backends of this device.

``bytes`` (an ideal kernel, P = one [N,1,H,W] plane): fwd reads f, b (2C P) and m (P) and writes
out (C P) [+ the shifted mask, P]; the backward reads go, f, b (3C P), m (P) [+ gms, P] and writes
gf, gb (2C P) and gm (P).
"""

import pytest
import torch

from conftest import DEVICE, IMPLS, compiled, impl_skip_reason, run, shape_str, sync

from ilsgan.ops._composite import SPEC, composite

SHAPES = [(32, 3, 64, 64), (32, 3, 128, 128)]


def _ref(f, b, m, s):
    return composite(f, b, m, s, impl="ref")


def _ref_noshift(f, b, m):
    return composite(f, b, m, impl="ref")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shifted", [False, True], ids=["noshift", "shift"])
@pytest.mark.parametrize("kind", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_str)
def test_composite(benchmark, shape, kind, shifted, impl):
    reason = impl_skip_reason(SPEC, impl)
    if reason is not None:
        pytest.skip(reason)
    N, C, H, W = shape
    g = torch.Generator().manual_seed(0)
    f = torch.randn(shape, generator=g).to(DEVICE)
    b = torch.randn(shape, generator=g).to(DEVICE)
    m = torch.rand((N, 1, H, W), generator=g).to(DEVICE)
    s = torch.round((torch.rand((N, 2), generator=g) * 2 - 1) * 0.125 * W).long().to(DEVICE)
    if impl == "compile":
        op = compiled(("composite", kind, shifted, shape), _ref if shifted else _ref_noshift)
    else:
        def op(*a):
            return composite(*a, impl=impl)
    args = (f, b, m, s) if shifted else (f, b, m)
    P = N * H * W * f.element_size()
    extra = P if shifted else 0
    if kind == "fwd":
        def fn():
            with torch.no_grad():
                op(*args)
            sync()
        nbytes = (3 * C + 1) * P + extra
    else:
        for t in (f, b, m):
            t.requires_grad_(True)
        go = torch.randn(shape, generator=g).to(DEVICE)
        gms = torch.randn((N, 1, H, W), generator=g).to(DEVICE)

        def fn():
            out, ms = op(*args)
            if shifted:
                torch.autograd.grad((out, ms), (f, b, m), (go, gms))
            else:
                torch.autograd.grad(out, (f, b, m), go)
            sync()
        nbytes = (3 * C + 1) * P + extra + (5 * C + 2) * P + extra
    name = "composite-shift" if shifted else "composite"
    run(benchmark, fn, group=f"{name} {kind} {shape_str(shape)}", impl=impl, bytes=nbytes)
