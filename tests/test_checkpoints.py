"""Checkpoint format: atomic save, load_generator, RNG capture/restore, config mismatch errors."""

import os
import random

import numpy as np
import pytest
import torch

from ilsgan import checkpoints as ck
from ilsgan.networks import build_networks, get_preset


def tiny_cfg():
    cfg = get_preset("quick")
    cfg.update(resolution=16, z_dim=16, w_dim=16, channel_base=256, channel_max=16, mapping_layers=1, batch=4)
    return cfg


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
    assert ckpt["counters"]["cur_nimg"] == 64 and ckpt["config"]["resolution"] == 16
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
    with pytest.raises(ck.CheckpointError, match="resolution"):
        ck.check_config_compatible({"resolution": 16}, {"resolution": 32})


def test_rng_roundtrip():
    state = ck.capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ck.restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
