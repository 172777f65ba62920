"""A tiny training config for the training tests (16x16, 16 channels, batch 4)."""

from ilsgan.networks import get_preset

TINY_CFG_ARGS = ["--resolution", "16", "--batch", "4", "--cfg", "z_dim=16", "--cfg", "w_dim=16",
                 "--cfg", "channel_base=256", "--cfg", "channel_max=16", "--cfg", "mapping_layers=1"]


def tiny_cfg(**kw):
    cfg = get_preset("quick")
    cfg.update(resolution=16, z_dim=16, w_dim=16, channel_base=256, channel_max=16, mapping_layers=1, batch=4,
               kimg=1, snap_kimg=1, tick_kimg=0.004)
    cfg.update(kw)
    return cfg
