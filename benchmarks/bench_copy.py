"""Plain tensor copies on the hot shapes: the memory-bandwidth yardstick for ``report.py``.

Group ``copy <shape>``; ``copy_`` writes into a preallocated tensor, ``clone`` allocates its output
(as every op does). ``bytes`` = read + write = 2 * numel * itemsize.
"""

import pytest
import torch

from conftest import DEVICE, run, shape_str, sync

SHAPES = [(32, 256, 8, 8), (32, 256, 16, 16), (32, 256, 32, 32), (32, 256, 64, 64), (32, 128, 128, 128)]


@pytest.mark.parametrize("impl", ["copy_", "clone"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_str)
def test_copy(benchmark, shape, impl):
    x = torch.randn(shape, device=DEVICE)
    y = torch.empty_like(x)

    if impl == "copy_":
        def fn():
            y.copy_(x)
            sync()
    else:
        def fn():
            x.clone()
            sync()

    run(benchmark, fn, group=f"copy {shape_str(shape)}", impl=impl, bytes=2 * x.numel() * x.element_size())
