"""MINE orders clearly dependent and independent pairs correctly (small, fast)."""

import torch

from ilsgan.metrics import mine_estimate


def test_mine_orders_dependent_above_independent():
    g = torch.Generator().manual_seed(0)
    n, d = 512, 4
    x = torch.randn(n, d, generator=g)
    y_dep = x + 0.1 * torch.randn(n, d, generator=g)
    y_ind = torch.randn(n, d, generator=g)
    kw = dict(iters=300, batch=64, lr=1e-3, hidden=64, eval_every=10, n_last=5, seed=0)
    dep = mine_estimate(x, y_dep, **kw)
    ind = mine_estimate(x, y_ind, **kw)
    assert dep["mi"] > ind["mi"] + 0.5, (dep["mi"], ind["mi"])
    assert abs(ind["mi"]) < 0.3
    assert len(dep["history"]) == 30


def test_mine_validation():
    import pytest

    with pytest.raises(ValueError, match="same number"):
        mine_estimate(torch.zeros(4, 2), torch.zeros(5, 2), iters=1)
    with pytest.raises(ValueError, match="iters"):
        mine_estimate(torch.zeros(4, 2), torch.zeros(4, 2), iters=0)
