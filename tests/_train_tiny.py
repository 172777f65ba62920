"""A tiny training config for the training tests (16x16, 16 channels, batch 4), and a run of it."""

import dataclasses
from pathlib import Path

from ilsgan.config import get_preset

TINY_CFG_ARGS = ["--resolution", "16", "--batch", "4", "--cfg", "z_dim=16", "--cfg", "w_dim=16",
                 "--cfg", "channel_base=256", "--cfg", "channel_max=16", "--cfg", "mapping_layers=1"]


def tiny_cfg(**settings):
    """The quick preset shrunk to 16x16 on synthetic:easy, quiet (no progress bar, no TensorBoard, 4 grid
    samples), with ``settings`` (names of ilsgan.config) applied."""
    base = dict(resolution=16, z_dim=16, w_dim=16, channel_base=256, channel_max=16, mapping_layers=1, batch=4,
                kimg=1, snap=1, tick=0.004, data="synthetic:easy", no_progress=True, no_tensorboard=True,
                grid_samples=4)
    return get_preset("quick").replace(**{**base, **settings})


def cli_config(argv):
    """The config ``python -m ilsgan.train ARGV`` starts a new run with (what its ``_run`` hands
    ``prepare_run``: the chosen preset with the command line's settings)."""
    from ilsgan import train
    args = train.build_parser().parse_args(argv)
    return get_preset(train.choose_preset(args)).replace(**train.flag_settings(args))


def run_tiny(run_dir, cfg=None, resume=None, dataset=None, log_fn=print):
    """prepare_run + train of ``cfg`` (default :func:`tiny_cfg`) into ``run_dir``; ``dataset``
    replaces the prepared one (a dataset the test changes under the run)."""
    from ilsgan.training import prepare_run, train
    run_dir = Path(run_dir)
    cfg = (cfg or tiny_cfg()).replace(outdir=str(run_dir.parent), name=run_dir.name)
    run = prepare_run(cfg, resume, log_fn=log_fn)
    if dataset is not None:
        run = dataclasses.replace(run, dataset=dataset)
    return train(run)
