"""bias_act on the hot ILSGAN shapes (batch 32; synthesis/discriminator layers: lrelu, bias,
gain sqrt(2), clamp 256), forward and forward+backward, for ref, torch.compile(ref) and the fast
backends of this device.

``bytes`` is what an ideal kernel moves: fwd = read x + write y; fwd+bwd adds read dy + read y +
write dx (the bias and its gradient are negligible).
"""

import math

import pytest
import torch

from conftest import DEVICE, IMPLS, compiled, impl_skip_reason, run, shape_str, sync

from ilsgan.ops import bias_act
from ilsgan.ops._bias_act import SPEC

SHAPES = [(32, 256, 8, 8), (32, 256, 16, 16), (32, 256, 32, 32), (32, 256, 64, 64), (32, 128, 128, 128)]
KW = dict(dim=1, act="lrelu", alpha=0.2, gain=math.sqrt(2), clamp=256.0)


def _ref(x, b):
    return bias_act(x, b, impl="ref", **KW)


def _fn(impl, kind, shape):
    if impl == "compile":
        fwd = compiled(("bias_act", kind, shape), _ref)
    else:
        def fwd(x, b):
            return bias_act(x, b, impl=impl, **KW)
    return fwd


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_str)
def test_bias_act(benchmark, shape, kind, impl):
    reason = impl_skip_reason(SPEC, impl)
    if reason is not None:
        pytest.skip(reason)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(DEVICE)
    b = torch.randn(shape[1], generator=g).to(DEVICE)
    f = _fn(impl, kind, shape)
    n = x.numel() * x.element_size()
    if kind == "fwd":
        def fn():
            with torch.no_grad():
                f(x, b)
            sync()
        nbytes = 2 * n
    else:
        x.requires_grad_(True)
        b.requires_grad_(True)
        dy = torch.randn(shape, generator=g).to(DEVICE)

        def fn():
            y = f(x, b)
            torch.autograd.grad(y, (x, b), dy)
            sync()
        nbytes = 5 * n
    run(benchmark, fn, group=f"bias_act {kind} {shape_str(shape)}", impl=impl, bytes=nbytes)
