"""Training-iteration benchmark: seconds per ILSGAN iteration (G main + D main + the lazy R1 step
amortized over its interval of 16), batch 32, with every op on ``auto`` vs ``ref`` in the same run.

pytest-benchmark (``pytest benchmarks/bench_train.py --benchmark-enable``): groups
``"train iter <R>px b<N> <preset>"`` (G main + D main) and ``"train Dreg <R>px b<N> <preset>"``
(one R1 step, runs every 16 iterations), ``extra_info`` ``impl``, ``preset``, ``sec_per_kimg``.
On CPU: the ``quick`` preset at 64x64. On a GPU: also ``paper64`` and ``paper128``.

Script mode (prints s/iter and sec/kimg, auto vs ref)::

    python benchmarks/bench_train.py [--presets quick] [--impls auto ref] [--batch 32] [--iters 3]

Augmentation p = 0 (the start of training; ADA raises p later, adding its cost).
"""

from __future__ import annotations

import argparse
import time
import warnings

import pytest
import torch

# conftest also applies the training run's CPU malloc setting, in script mode too
from conftest import DEVICE, sync
PRESETS = ("quick", "paper64", "paper128") if DEVICE.type == "cuda" else ("quick",)
IMPLS = ("auto", "ref")
BATCH = 32


class TrainStep:
    """The loop's phases (same loss code as :func:`ilsgan.training.train`) on fixed-size random data.

    ``overrides``: settings to change (names of :mod:`ilsgan.config`, e.g. ``precision``,
    ``num_fp16_res``); ``channels_last``: the mixed-precision blocks keep their weights and activations
    channels_last (the networks' ``fp16_channels_last``)."""

    def __init__(self, preset: str, impl: str, batch: int = BATCH, resolution=None, device=DEVICE,
                 overrides=None, channels_last: bool = False):
        from ilsgan.augment import AugmentPipe
        from ilsgan.config import get_preset
        from ilsgan.losses.gan import ILSGANLoss
        from ilsgan.networks import build_networks
        from ilsgan.training import lazy_adam_params
        cfg = get_preset(preset).replace(batch=batch)
        if resolution:
            cfg = cfg.replace(resolution=resolution)
        cfg = cfg.replace(**(overrides or {}))
        torch.manual_seed(0)
        self.cfg = cfg
        self.G, self.D = build_networks(cfg, impl=impl, device=device, channels_last=channels_last)
        self.G.requires_grad_(False)
        self.D.requires_grad_(False)
        aug, opt = cfg.augment, cfg.optim
        pipe = AugmentPipe(aug.aug_pipe, p=0.0, impl=impl).to(device) if aug.aug == "ada" else None
        self.loss = ILSGANLoss(self.G, self.D, pipe, cfg.loss, r1_gamma=cfg.r1_weight(), impl=impl)
        glr, gb = lazy_adam_params(opt.glr, opt.betas, opt.G_reg_interval)
        dlr, db = lazy_adam_params(opt.dlr, opt.betas, opt.D_reg_interval)
        self.G_opt = torch.optim.Adam(self.G.parameters(), lr=glr, betas=gb)
        self.D_opt = torch.optim.Adam(self.D.parameters(), lr=dlr, betas=db)
        r = cfg.network.resolution
        self.real = (torch.rand(batch, 3, r, r, device=device) * 2 - 1)
        self.batch = batch
        self.device = device
        self.reg_interval = opt.D_reg_interval  # the lazy R1 step runs every this many iterations

    def _phase(self, name, module, opt, gain=1):
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        z = torch.randn(self.batch, self.G.z_dim, device=self.device)
        self.loss.accumulate_gradients(name, self.real, z, gain=gain)
        module.requires_grad_(False)
        opt.step()

    def main(self):
        self._phase("Gmain", self.G, self.G_opt)
        self._phase("Dmain", self.D, self.D_opt)
        sync()

    def reg(self):
        self._phase("Dreg", self.D, self.D_opt, gain=self.reg_interval)
        sync()


_STEPS = {}


def _step(preset, impl):
    key = (preset, impl)
    if key not in _STEPS:
        _STEPS.clear()  # one model in memory at a time
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _STEPS[key] = TrainStep(preset, impl)
    return _STEPS[key]


def _res(preset):
    from ilsgan.config import get_preset
    return get_preset(preset).network.resolution


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("preset", PRESETS)
def test_train_iter(benchmark, preset, impl):
    step = _step(preset, impl)
    step.main()  # warm-up
    benchmark.group = f"train iter {_res(preset)}px b{BATCH} {preset}"
    benchmark.extra_info.update(impl=impl, preset=preset, batch=BATCH, device=str(DEVICE),
                                threads=torch.get_num_threads())
    benchmark.pedantic(step.main, rounds=3 if DEVICE.type == "cpu" else 20, warmup_rounds=0)
    benchmark.extra_info["sec_per_kimg_main"] = benchmark.stats.stats.mean * 1000 / BATCH


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("preset", PRESETS)
def test_train_dreg(benchmark, preset, impl):
    step = _step(preset, impl)
    step.reg()
    benchmark.group = f"train Dreg {_res(preset)}px b{BATCH} {preset}"
    benchmark.extra_info.update(impl=impl, preset=preset, batch=BATCH, device=str(DEVICE), every=step.reg_interval)
    benchmark.pedantic(step.reg, rounds=3 if DEVICE.type == "cpu" else 20, warmup_rounds=0)


def _time(fn, iters):
    fn()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--impls", nargs="+", default=list(IMPLS))
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--iters", type=int, default=3 if DEVICE.type == "cpu" else 20)
    args = ap.parse_args()
    print(f"device {DEVICE}, threads {torch.get_num_threads()}, batch {args.batch}")
    for preset in args.presets:
        rows = {}
        for impl in args.impls:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step = TrainStep(preset, impl, batch=args.batch, resolution=args.resolution)
            t_main = _time(step.main, args.iters)
            t_reg = _time(step.reg, max(1, args.iters // 2))
            s_iter = t_main + t_reg / step.reg_interval
            rows[impl] = s_iter
            print(f"{preset:9s} {step.cfg['resolution']}px impl={impl:5s} main {t_main:.3f} s  Dreg {t_reg:.3f} s  "
                  f"-> {s_iter:.3f} s/iter, {s_iter * 1000 / args.batch:.1f} s/kimg")
            del step
        if "auto" in rows and "ref" in rows:
            print(f"{preset:9s} speed-up auto vs ref: {rows['ref'] / rows['auto']:.2f}x")


if __name__ == "__main__":
    main()
