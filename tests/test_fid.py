"""FID math vs closed forms and a float64 reference; KID sanity; the Inception loader."""

import numpy as np
import pytest
import torch

from ilsgan.metrics import (InceptionError, extract_features, fid_from_features, frechet_distance,
                            kid_from_features, load_inception, resolve_inception_path)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _rand_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _reference_fd(mu1, s1, mu2, s2):
    """Reference: eigenvalues of the (non-symmetric) product S1 S2, as scipy.linalg.sqrtm users compute."""
    w = np.linalg.eigvals(s1 @ s2)
    tr = np.sqrt(np.clip(w.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_fd_closed_forms():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s = _rand_cov(rng, d)
    # same covariance: only the mean term
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-9, abs=1e-9)
    # scaled covariance c^2 S: |dmu|^2 + (1-c)^2 tr S
    c = 1.7
    want = ((mu1 - mu2) ** 2).sum() + (1 - c) ** 2 * np.trace(s)
    assert frechet_distance(mu1, s, mu2, c * c * s) == pytest.approx(want, rel=1e-9)
    # diagonal: sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-9)
    # identical distributions
    assert abs(frechet_distance(mu1, s, mu1, s)) < 1e-9


def test_fd_matches_float64_reference_general():
    rng = np.random.default_rng(1)
    for d in (3, 32):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _rand_cov(rng, d), _rand_cov(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-8)


def test_fid_from_samples_converges_to_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 40000
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d)) * 2.0 + 1.0  # N(1, 4 I): FID = d*1 + d*(1-2)^2 = 2d
    assert fid_from_features(x, y) == pytest.approx(2 * d, rel=0.05)


def test_fd_shape_validation():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kid_sanity():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 8))
    x2 = rng.standard_normal((300, 8))
    y = rng.standard_normal((300, 8)) + 1.0
    same, _ = kid_from_features(x, x2, num_subsets=20, max_subset_size=200)
    diff, _ = kid_from_features(x, y, num_subsets=20, max_subset_size=200)
    assert abs(same) < 0.05
    assert diff > 10 * max(abs(same), 1e-3)
    with pytest.raises(ValueError, match="shapes"):
        kid_from_features(x, y[:, :4])


class _TinyFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 4 * 4, 12)

    def forward(self, x):
        assert x.shape[-1] == 299
        return self.lin(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def test_inception_loader_and_features(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.script(_TinyFeatures()).save(str(path))
    model = load_inception(str(path))
    imgs = [torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), torch.rand(2, 3, 20, 20) * 2 - 1]
    f = extract_features(model, imgs)
    assert f.shape == (5, 12) and f.dtype == np.float64
    assert fid_from_features(f, f) == pytest.approx(0, abs=1e-6)


def test_inception_errors_name_the_option(tmp_path, monkeypatch):
    with pytest.raises(InceptionError, match="--inception"):
        load_inception(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(InceptionError, match="--inception"):
        load_inception(str(bad))
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InceptionError, match="fid-helper"):
        resolve_inception_path("fid-helper")
    with pytest.raises(InceptionError, match="--inception"):
        resolve_inception_path(None)
