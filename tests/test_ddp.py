"""Data-parallel training: `torchrun --nproc_per_node=2 -m ilsgan.train` on CPU (gloo), tiny run."""

import json
import os
import subprocess
import sys

import pytest
import torch

from _train_tiny import TINY_CFG_ARGS


def test_torchrun_two_gloo_processes(tmp_path):
    args = TINY_CFG_ARGS + ["--no-progress", "--no-tensorboard", "--data", "synthetic:easy", "--aug", "noaug",
                            "--outdir", str(tmp_path), "--name", "ddp", "--kimg", "0.008", "--snap", "0.008",
                            "--tick", "0.004", "--threads", "1", "--device", "cpu", "--final-eval", "off"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ilsgan.train", *args], capture_output=True, text=True, env=env, timeout=400,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert "(2 processes)" in proc.stdout
    recs = [json.loads(l) for l in open(run / "log.jsonl")]
    assert len(recs) == 2 and recs[-1]["Progress/iteration"] == 2  # global batch 4 = 2 x 2 per process
    from ilsgan.checkpoints import load_checkpoint
    ck = load_checkpoint(run / "checkpoint-latest.pt")
    assert ck["meta"]["world_size"] == 2 and ck["counters"]["cur_nimg"] == 8
    assert all(torch.isfinite(v).all() for v in ck["G"].values() if v.is_floating_point())
