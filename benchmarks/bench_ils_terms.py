"""The ILS loss reductions (ils_terms, both region pairs, Laplace) plus the mask terms, as the G
loss uses them, at batch 32, 64x64 and 128x128, forward and forward+backward, for ref,
torch.compile(ref) and the fast backends of this device.

``bytes`` (an ideal kernel, P = one [N,1,H,W] plane, C = 3): fwd reads f, b, m (2C+1)P and the mask
again for mask_terms (P); fwd+bwd adds the backward's reads (2C+1)P + P and writes (2C+1)P + P.
"""

import pytest
import torch

from conftest import DEVICE, IMPLS, compiled, impl_skip_reason, run, shape_str, sync

from ilsgan.ops._ils_terms import SPEC, ils_terms, mask_terms

SHAPES = [(32, 3, 64, 64), (32, 3, 128, 128)]


def _loss(f, b, m, p1, p2, impl):
    t = ils_terms(f, b, m, p1, p2, impl=impl)
    mt = mask_terms(m, impl=impl)
    return (t[:, 1] - t[:, 0] + t[:, 3] - t[:, 2]).mean() + (2 * mt[:, 0] + 2 * torch.relu(0.25 - mt[:, 1])).mean()


def _ref(f, b, m, p1, p2):
    return _loss(f, b, m, p1, p2, "ref")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_str)
def test_ils_terms(benchmark, shape, kind, impl):
    reason = impl_skip_reason(SPEC, impl)
    if reason is not None:
        pytest.skip(reason)
    N, C, H, W = shape
    g = torch.Generator().manual_seed(0)
    f = (torch.rand(shape, generator=g) * 2.4 - 1.2).to(DEVICE)
    b = (torch.rand(shape, generator=g) * 2.4 - 1.2).to(DEVICE)
    m = torch.rand((N, 1, H, W), generator=g).to(DEVICE)
    p1 = torch.randperm(N, generator=g).to(DEVICE)
    p2 = torch.randperm(N, generator=g).to(DEVICE)
    if impl == "compile":
        op = compiled(("ils_terms", kind, shape), _ref)
    else:
        def op(*a):
            return _loss(*a, impl)
    P = N * H * W * f.element_size()
    if kind == "fwd":
        def fn():
            with torch.no_grad():
                op(f, b, m, p1, p2)
            sync()
        nbytes = (2 * C + 2) * P
    else:
        for t in (f, b, m):
            t.requires_grad_(True)

        def fn():
            torch.autograd.grad(op(f, b, m, p1, p2), (f, b, m))
            sync()
        nbytes = 3 * (2 * C + 2) * P
    run(benchmark, fn, group=f"ils_terms+mask_terms {kind} {shape_str(shape)}", impl=impl, bytes=nbytes)
