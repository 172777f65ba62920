"""Training losses and loop: one iteration, R1 through D on our ops, lazy-reg correction, NaN guard,
exact resume."""

import json
import math

import pytest
import torch

from ilsgan.config import LossConfig
from ilsgan.losses.gan import (ILSGANLoss, d_logistic_loss, g_nonsaturating_loss, perturbed_composite, r1_penalty,
                               random_shift)
from ilsgan.networks import build_networks
from ilsgan.training import lazy_adam_params
from ilsgan.training.ema import ema_beta, update_ema
from ilsgan.training.loop import InfiniteSampler, _guard_grads

from _train_tiny import run_tiny, tiny_cfg


def _loss(G, D, cfg, pipe=None):
    return ILSGANLoss(G, D, pipe, cfg.loss, r1_gamma=cfg.r1_weight())


def test_basic_losses():
    x = torch.tensor([[0.0], [2.0]])
    torch.testing.assert_close(g_nonsaturating_loss(x), torch.nn.functional.softplus(-x).flatten())
    torch.testing.assert_close(d_logistic_loss(real_logits=x, fake_logits=-x), 2 * torch.nn.functional.softplus(-x).flatten())
    with pytest.raises(ValueError):
        d_logistic_loss()
    s = random_shift(1000, 64, 0.125, "cpu")
    assert s.dtype == torch.int64 and s.abs().max() <= 8 and s.abs().max() >= 7
    f, b, m = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    x, mt = perturbed_composite(f, b, m, 0.0)
    torch.testing.assert_close(x, m * f + (1 - m) * b)
    assert mt is m


def test_sigma_schedule_and_weights():
    w = LossConfig(ils_sigma=(0.2, 1.0), ils_switch_kimg=400, w_ils=2.0)
    assert w.ils_weight_at(0) == pytest.approx(0.4) and w.ils_weight_at(400) == pytest.approx(0.4)
    assert w.ils_weight_at(400.001) == pytest.approx(2.0)
    ramp = LossConfig(w_bin=2.0, bin_ramp_kimg=10)
    assert (ramp.w_bin_at(0), ramp.w_bin_at(5), ramp.w_bin_at(20)) == (0.0, 1.0, 2.0)
    assert LossConfig().w_bin_at(0) == 2.0
    assert tiny_cfg().r1_weight() == pytest.approx(0.0002 * 16 * 16 / 4)
    paper = tiny_cfg(resolution=64, batch=32)
    assert paper.r1_weight() == pytest.approx(0.0256) and paper.loss.w_bin == 2 and paper.loss.w_area == 2
    assert tiny_cfg(r1_gamma=1.5).r1_weight() == 1.5


def test_lazy_reg_correction():
    lr, betas = lazy_adam_params(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    lr, betas = lazy_adam_params(0.0025, (0.0, 0.99), 4)
    assert lr == pytest.approx(0.002) and betas[1] == pytest.approx(0.99 ** 0.8)
    assert lazy_adam_params(0.1, (0.5, 0.9), None) == (0.1, (0.5, 0.9))


def test_ema():
    assert ema_beta(0, 32, 10, 0.05) == pytest.approx(0.0)  # start: copy
    assert ema_beta(10 ** 9, 32, 10, 0.05) == pytest.approx(0.5 ** (32 / 10000))
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    update_ema(a, b, 0.0)
    torch.testing.assert_close(a.weight, b.weight)


def test_sampler_resume_positions():
    full = iter(InfiniteSampler(10, seed=3))
    seq = [next(full) for _ in range(25)]
    assert sorted(seq[:10]) == list(range(10))
    rest = iter(InfiniteSampler(10, seed=3, start=13))
    assert [next(rest) for _ in range(12)] == seq[13:]
    r0, r1 = iter(InfiniteSampler(10, 0, 2, seed=3)), iter(InfiniteSampler(10, 1, 2, seed=3))
    assert [next(r0) for _ in range(3)] == seq[0:6:2] and [next(r1) for _ in range(3)] == seq[1:6:2]


def _phase(loss, name, module, opt, real, z, gain=1):
    opt.zero_grad(set_to_none=True)
    module.requires_grad_(True)
    stats = loss.accumulate_gradients(name, real, z, gain=gain)
    module.requires_grad_(False)
    return stats


def test_one_iteration_changes_parameters():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    G, D = build_networks(cfg)
    G.requires_grad_(False), D.requires_grad_(False)
    from ilsgan.augment import AugmentPipe
    pipe = AugmentPipe("bgc", p=0.5)
    loss = _loss(G, D, cfg, pipe)
    g_opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    g0 = [p.detach().clone() for p in G.parameters()]
    d0 = [p.detach().clone() for p in D.parameters()]
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    all_stats = {}
    for name, mod, opt, gain in (("Gmain", G, g_opt, 1), ("Dmain", D, d_opt, 1), ("Dreg", D, d_opt, 16)):
        stats = _phase(loss, name, mod, opt, real, torch.randn(4, G.z_dim), gain)
        grads = [p.grad for p in mod.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        opt.step()
        all_stats.update(stats)
    for k in ("Loss/G/adv", "Loss/ILS", "Loss/D/real", "Loss/D/fake", "Loss/D/reg", "Mask/area", "Mask/diversity"):
        assert math.isfinite(float(all_stats[k])), k
    changed_g = sum(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    changed_d = sum(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert changed_g == len(g0) and changed_d == len(d0)


def test_mask_warnings():
    from ilsgan.training.stats import collapse_warning
    healthy = {"Mask/area": 0.3, "Mask/binarized": 0.95, "Mask/diversity": 0.4, "Mask/collapsed_fg": 0.0,
               "Mask/collapsed_bg": 0.0}
    assert collapse_warning(healthy) is None
    assert "all foreground" in collapse_warning(dict(healthy, **{"Mask/collapsed_fg": 0.75}))
    assert "all background" in collapse_warning(dict(healthy, **{"Mask/collapsed_bg": 0.5}))
    fixed = collapse_warning(dict(healthy, **{"Mask/diversity": 0.03}))
    assert fixed is not None and fixed.startswith("fixed mask") and "0.030" in fixed
    # soft masks early in training are not yet judged
    assert collapse_warning(dict(healthy, **{"Mask/diversity": 0.03, "Mask/binarized": 0.5})) is None


def test_mask_diversity_statistic():
    # the same mask for every sample -> 0; independent random masks -> about 0.5
    torch.manual_seed(0)
    cfg = tiny_cfg()
    G, D = build_networks(cfg)
    loss = _loss(G, D, cfg)
    same = torch.rand(1, 1, 16, 16).round().expand(8, 1, 16, 16)
    varied = torch.rand(8, 1, 16, 16).round()
    fake = {"fg": torch.rand(8, 3, 16, 16), "bg": torch.rand(8, 3, 16, 16)}
    for mask, lo, hi in ((same, 0.0, 1e-6), (varied, 0.4, 0.6)):
        loss._layers = lambda z, mask=mask: dict(fake, mask=mask.clone().requires_grad_(True))
        G.requires_grad_(False)
        stats = loss.accumulate_gradients("Gmain", torch.rand(8, 3, 16, 16), torch.randn(8, G.z_dim))
        assert lo <= float(stats["Mask/diversity"]) <= hi


def test_diversity_term_reaches_the_generator():
    # w_div > 0 adds w_div * relu(div_min - diversity) to the G loss and its gradient to the mask
    torch.manual_seed(0)
    cfg = tiny_cfg()
    G, D = build_networks(cfg)
    mask = torch.full((8, 1, 16, 16), 0.5) + 0.01 * torch.rand(8, 1, 16, 16)
    grads = {}
    for w_div in (0.0, 3.0):
        w = LossConfig(w_adv=0.0, w_bin=0.0, w_area=0.0, ils=False, shift=0.0, w_div=w_div, div_min=0.3)
        loss = ILSGANLoss(G, D, None, w, r1_gamma=0.0)
        m = mask.clone().requires_grad_(True)
        loss._layers = lambda z, m=m: {"fg": torch.rand(8, 3, 16, 16), "bg": torch.rand(8, 3, 16, 16), "mask": m}
        G.requires_grad_(False)
        stats = loss.accumulate_gradients("Gmain", torch.rand(8, 3, 16, 16), torch.randn(8, G.z_dim))
        grads[w_div] = m.grad
        assert float(stats["Mask/layout_diversity"]) < 0.01
    assert grads[0.0] is None or float(grads[0.0].abs().max()) == 0.0
    assert float(stats["Loss/G/div"]) == pytest.approx(0.3 - float(stats["Mask/layout_diversity"]), abs=1e-6)
    assert float(stats["Loss/G/total"]) == pytest.approx(3.0 * float(stats["Loss/G/div"]), rel=1e-6)
    assert float(grads[3.0].abs().max()) > 0
    # the hinge is off once the layouts differ by div_min: no term, no gradient
    halves = torch.zeros(8, 1, 16, 16)
    halves[::2, :, :, :8] = 1
    halves[1::2, :, :, 8:] = 1
    m = halves.requires_grad_(True)
    loss._layers = lambda z: {"fg": torch.rand(8, 3, 16, 16), "bg": torch.rand(8, 3, 16, 16), "mask": m}
    stats = loss.accumulate_gradients("Gmain", torch.rand(8, 3, 16, 16), torch.randn(8, G.z_dim))
    assert float(stats["Loss/G/div"]) == 0.0 and float(m.grad.abs().max()) == 0.0


def test_area_ceiling_is_on_the_unperturbed_mask():
    # A full mask must pay the whole mirror term 0.25 although its shifted copy has zero-filled borders.
    torch.manual_seed(0)
    cfg = tiny_cfg()
    G, D = build_networks(cfg)
    w = LossConfig(w_adv=0.0, w_bin=0.0, w_area=1.0, area_mirror=True, ils=False, shift=0.25)
    loss = ILSGANLoss(G, D, None, w, r1_gamma=0.0)
    loss._layers = lambda z: {"fg": torch.rand(8, 3, 16, 16), "bg": torch.rand(8, 3, 16, 16),
                              "mask": torch.ones(8, 1, 16, 16, requires_grad=True)}
    G.requires_grad_(False)
    stats = loss.accumulate_gradients("Gmain", torch.rand(8, 3, 16, 16), torch.randn(8, G.z_dim))
    assert float(stats["Mask/area_perturbed"]) < 0.9  # the shift did uncover borders
    assert float(stats["Loss/G/total"]) == pytest.approx(0.25)


def test_ils_off_ablation():
    torch.manual_seed(0)
    cfg = tiny_cfg(ils=False)
    G, D = build_networks(cfg)
    loss = _loss(G, D, cfg)
    stats = _phase(loss, "Gmain", G, torch.optim.Adam(G.parameters()), torch.zeros(4, 3, 16, 16), torch.randn(4, 16))
    assert "Loss/ILS" not in stats


def test_r1_through_full_discriminator_matches_ref():
    """R1 penalty and its gradient w.r.t. D's parameters (second order through every op of D):
    auto (our kernels) vs ref."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    _, D_auto = build_networks(cfg, impl="auto")
    _, D_ref = build_networks(cfg, impl="ref")
    D_ref.load_state_dict(D_auto.state_dict())
    real = torch.randn(4, 3, 16, 16)
    out = []
    for D in (D_auto, D_ref):
        x = real.clone().requires_grad_(True)
        pen = r1_penalty(D(x), x, gamma=1.0).mean()
        grads = torch.autograd.grad(pen, list(D.parameters()), allow_unused=True)
        grads = [torch.zeros_like(q) if g is None else g for g, q in zip(grads, D.parameters())]
        out.append((pen.detach(), grads))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-4, atol=1e-6)
    assert out[0][0] > 0
    for (name, q), ga, gr in zip(D_auto.named_parameters(), out[0][1], out[1][1]):
        torch.testing.assert_close(ga, gr, rtol=1e-3, atol=1e-6)
        if q.dim() >= 2:  # every conv/fc weight gets an R1 gradient (biases of the last layers cannot)
            assert ga.abs().sum() > 0, name


def test_nan_guard():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, float("nan"), float("inf")])
    assert _guard_grads([p], "skip") is True and torch.isnan(p.grad[1])
    assert _guard_grads([p], "replace") is True
    assert torch.equal(p.grad, torch.tensor([1.0, 0.0, 1e5]))
    assert _guard_grads([p], "replace") is False


def test_nan_guard_in_loop(tmp_path, monkeypatch):
    """A NaN gradient in every G step is counted and (mode skip) the step skipped: G stays finite."""
    import ilsgan.losses.gan as gan
    orig = gan.ILSGANLoss.accumulate_gradients

    def poisoned(self, phase, *a, **k):
        stats = orig(self, phase, *a, **k)
        if phase == "Gmain":
            next(self.G.parameters()).grad.fill_(float("nan"))
        return stats
    monkeypatch.setattr(gan.ILSGANLoss, "accumulate_gradients", poisoned)
    r = run_tiny(tmp_path / "run", tiny_cfg(aug="noaug", max_iters=2, nan_guard="skip"))
    assert r["nan_events"]["G"] == 2 and r["nan_events"]["D"] == 0
    from ilsgan.checkpoints import load_checkpoint
    ck = load_checkpoint(tmp_path / "run" / "checkpoint-latest.pt")
    assert all(torch.isfinite(v).all() for v in ck["G"].values() if v.is_floating_point())
    log = [json.loads(l) for l in open(tmp_path / "run" / "log.jsonl")]
    assert log[-1]["Guard/nan_events_G"] == 2


def _losses(path):
    keys = ("Loss/G/adv", "Loss/G/total", "Loss/ILS", "Loss/D/real", "Loss/D/fake", "Loss/D/reg", "Mask/area",
            "Progress/augment_p")
    return [(r["Progress/iteration"], tuple(r.get(k) for k in keys)) for r in map(json.loads, open(path))]


def test_resume_is_exact(tmp_path):
    """2k iterations straight == k iterations, checkpoint, resume, k more (same seed, CPU)."""
    cfg = tiny_cfg(D_reg_interval=2, aug_p=0.3, ada_interval=1, ada_kimg=0.1, ema_kimg=0.01, seed=5)
    a = run_tiny(tmp_path / "a", cfg.replace(max_iters=4))
    assert a["iteration"] == 4
    run_tiny(tmp_path / "b", cfg.replace(max_iters=2))
    b = run_tiny(tmp_path / "b", cfg.replace(max_iters=4), resume=tmp_path / "b" / "checkpoint-latest.pt")
    assert b["iteration"] == 4
    la, lb = _losses(tmp_path / "a" / "log.jsonl"), _losses(tmp_path / "b" / "log.jsonl")
    assert [i for i, _ in la] == [1, 2, 3, 4] and [i for i, _ in lb] == [1, 2, 3, 4]
    assert la == lb
    from ilsgan.checkpoints import load_checkpoint
    ca = load_checkpoint(tmp_path / "a" / "checkpoint-latest.pt")
    cb = load_checkpoint(tmp_path / "b" / "checkpoint-latest.pt")
    for k in ("G", "D", "G_ema"):
        for n in ca[k]:
            assert torch.equal(ca[k][n], cb[k][n]), (k, n)


def test_diversity_term_needs_two_samples_per_process(tmp_path):
    # the term compares masks within one process's batch: refused before anything is written
    from ilsgan.config import ConfigError
    with pytest.raises(ConfigError, match="--w-div compares the masks within a batch"):
        run_tiny(tmp_path / "run", tiny_cfg(batch=1, w_div=1.0))
    assert not (tmp_path / "run").exists()
