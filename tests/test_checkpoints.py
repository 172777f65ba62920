"""Checkpoint format: atomic save, load_generator, RNG capture/restore, config mismatch errors."""

import dataclasses
import os
import random

import numpy as np
import pytest
import torch

from ilsgan import checkpoints as ck
from ilsgan.config import SessionConfig
from ilsgan.networks import build_networks

from _train_tiny import tiny_cfg


def _save(path, cfg):
    G, D = build_networks(cfg)
    G_ema, _ = build_networks(cfg)
    G_ema.load_state_dict(G.state_dict())
    opt = torch.optim.Adam(G.parameters())
    return G, ck.save_checkpoint(path, config=cfg, G=G, D=D, G_ema=G_ema, G_opt=opt, D_opt=None,
                                 counters={"cur_nimg": 64})


def test_save_and_load_generator(tmp_path):
    cfg = tiny_cfg()
    G, p = _save(tmp_path / "checkpoint-000000.pt", cfg)
    assert p.exists()
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    G2 = ck.load_generator(p)
    assert not G2.training
    assert all(not q.requires_grad for q in G2.parameters())
    z = torch.randn(2, G2.z_dim)
    G.eval()
    a = G(z, noise_mode="const", return_layers=True)
    b = G2(z, noise_mode="const", return_layers=True)
    for k in ("composite", "fg", "bg", "mask"):
        torch.testing.assert_close(a[k], b[k])
    # a run directory resolves to its latest checkpoint
    assert ck.load_generator(tmp_path, which="G").img_resolution == 16
    ckpt = ck.load_checkpoint(p)
    assert ckpt["counters"]["cur_nimg"] == 64 and ckpt["config"] == cfg  # the TrainConfig, as saved
    assert ck.find_latest(tmp_path) == p


def test_errors(tmp_path):
    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match="unreadable"):
        ck.load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"x": 1}, other)
    with pytest.raises(ck.CheckpointError, match="not an ilsgan checkpoint"):
        ck.load_checkpoint(other)
    with pytest.raises(ck.CheckpointError, match="no checkpoint"):
        ck.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="which"):
        ck.load_generator(other, which="D")
    a = tiny_cfg()
    with pytest.raises(ck.CheckpointError, match=r"resolution: checkpoint has 16, requested 32; z_dim: .* 16, .* 8"):
        ck.check_config_compatible(a, a.replace(resolution=32, z_dim=8))
    # other settings may change on resume; they are named, the session settings left out
    assert ck.check_config_compatible(a, a.replace(kimg=5, w_bin=1.0, device="cpu")) == [
        ("w_bin", 2.0, 1.0), ("kimg", 1.0, 5.0)]


def test_rng_roundtrip():
    state = ck.capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ck.restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


# ------------------------------------------------------------------------------------------------
# Version-1 checkpoints (before the typed config): the config was one flat dict of preset keys,
# some under other names. Written here as that version wrote them.

V1_CONFIG = dict(  # the quick preset at 16 px as `python -m ilsgan.train` resolved it, with --w-bin 1.5 --aug noaug
    resolution=16, z_dim=16, w_dim=16, mapping_layers=1, mapping_lr_multiplier=0.01, w_avg_beta=0.995,
    channel_base=256, channel_max=16, num_fp16_res=0, conv_clamp=256, mbstd_group_size=4, mbstd_num_channels=1,
    use_noise=True, batch=4, G_lr=0.002, D_lr=0.002, betas=(0.0, 0.99), eps=1e-8, gamma=None, r1_gamma_coef=0.0002,
    D_reg_interval=16, G_reg_interval=4, ema_kimg=None, ema_rampup=0.05, kimg=0.008, snap_kimg=0.008,
    augment=None, aug_p=0.0, ada_target=0.6, ada_interval=4, ada_kimg=20, shift_max=0.125, lambda_bin=1.5,
    bin_ramp_kimg=0.0, lambda_area=2.0, area_min=0.25, area_mirror=True, ils=True, ils_distribution="laplace",
    ils_sigma=(0.2, 1.0), ils_sigma_kimg=400, style_mixing=0.0, pl_weight=0.0, truncation_psi=1.0, name="quick",
    tick_kimg=0.004, lambda_ils=1.0)


def _write_v1(path, config=V1_CONFIG):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    G, D = build_networks(cfg)
    G_opt, D_opt = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "ilsgan-checkpoint", "version": 1, "config": dict(config),
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict(),
                "G_opt": G_opt.state_dict(), "D_opt": D_opt.state_dict(), "augment": None, "rng": ck.capture_rng(),
                "counters": {"cur_nimg": 8, "iteration": 2, "nan_events": {"G": 0, "D": 0}},
                "meta": {"time": 0.0, "ilsgan_version": "0.1.0", "torch_version": str(torch.__version__),
                         "world_size": 1, "data": "synthetic:easy", "seed": 3, "impl": "auto"}}, path)
    return path


def test_version_1_checkpoint_loads_and_resumes(tmp_path, capsys):
    import json

    from ilsgan import train
    path = _write_v1(tmp_path / "old" / "checkpoint-latest.pt")
    ckpt = ck.load_checkpoint(path)
    # version 1 had no diversity term, so the run resumes without it (w_div 0, not quick's 10)
    want = tiny_cfg(w_bin=1.5, aug="noaug", seed=3, kimg=0.008, snap=0.008, tick=0.004, ada_kimg=20, w_div=0.0)
    assert ckpt["config"] == dataclasses.replace(want, session=SessionConfig())
    assert ck.load_generator(path).img_resolution == 16
    # resume: the old settings carry on, the new checkpoint is in the current format
    argv = ["--no-progress", "--no-tensorboard", "--final-eval", "off", "--outdir", str(tmp_path), "--resume",
            str(path), "--kimg", "0.016"]
    assert train.main(argv) == 0, capsys.readouterr()
    recs = [json.loads(line) for line in open(tmp_path / "old" / "log.jsonl")]
    assert recs[-1]["Progress/iteration"] == 4 and recs[0]["Progress/kimg"] == 0.012  # tick 0.004 kept
    new = torch.load(tmp_path / "old" / "checkpoint-latest.pt", weights_only=True)
    assert new["version"] == ck.VERSION and new["config"]["loss"]["w_bin"] == 1.5
    assert new["config"]["data"]["data"] == "synthetic:easy" and new["config"]["run"]["seed"] == 3


def test_version_1_checkpoint_with_an_unknown_setting_fails_clearly(tmp_path):
    path = _write_v1(tmp_path / "checkpoint-latest.pt", dict(V1_CONFIG, warp_factor=9))
    with pytest.raises(ck.CheckpointError, match=r"format version 1\) has a config this ilsgan cannot read "
                                                 r"\(written by an earlier ilsgan.*unknown key 'warp_factor'"):
        ck.load_checkpoint(path)
