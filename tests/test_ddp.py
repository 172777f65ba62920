"""Data-parallel training: `torchrun --nproc_per_node=2 -m ilsgan.train` on CPU (gloo), tiny run."""

import json
import os
import signal
import subprocess
import sys
import time

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


# ---------------------------------------------------------------------------------------------------
# A process of a torchrun job dies or hangs: the others end within a bound, and the checkpoint loads.

def _start_long_run(tmp_path, name, timeout_s):
    args = TINY_CFG_ARGS + ["--no-progress", "--no-tensorboard", "--data", "synthetic:easy", "--aug", "noaug",
                            "--outdir", str(tmp_path), "--name", name, "--kimg", "100", "--snap", "0.008",
                            "--tick", "0.004", "--threads", "1", "--device", "cpu", "--dist-timeout", str(timeout_s)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", GLOO_SOCKET_IFNAME="lo")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                             "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", "-m", "ilsgan.train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(tmp_path))


def _ranks(launcher_pid):
    """{rank: pid} of the worker processes torchrun started."""
    out = {}
    for task in os.listdir(f"/proc/{launcher_pid}/task"):
        with open(f"/proc/{launcher_pid}/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                except OSError:
                    continue
                for kv in env:
                    if kv.startswith(b"RANK="):
                        out[int(kv[5:])] = int(pid)
    return out


def _kill_all(proc):
    """Kill the launcher and its workers (they run in their own sessions: killing torchrun alone leaves
    them training, holding the output pipe open) and return the output so far."""
    for pid in _ranks(proc.pid).values() if proc.poll() is None else ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    return proc.communicate(timeout=60)[0][-3000:]


def _finish(proc, timeout, what):
    """The launcher's output once it exits within ``timeout`` s; else kill everything and fail."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what}: " + _kill_all(proc)) from None


def _wait_for_snapshots(proc, run, n=2, limit=240):
    t0 = time.time()
    while time.time() - t0 < limit and proc.poll() is None:
        if len(list(run.glob("checkpoint-0*.pt"))) >= n:
            return
        time.sleep(0.5)
    raise AssertionError("the run did not reach its snapshots: " + _kill_all(proc))


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_process_ends_the_others_and_keeps_the_checkpoint(tmp_path):
    proc = _start_long_run(tmp_path, "k", timeout_s=20)
    run = tmp_path / "k"
    _wait_for_snapshots(proc, run)
    ranks = _ranks(proc.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    t0 = time.time()
    out = _finish(proc, 90, "hung after a process was killed")
    assert time.time() - t0 < 60
    assert proc.returncode != 0
    assert "lost contact with the others" in out and "--resume latest" in out, out[-3000:]
    from ilsgan.checkpoints import load_checkpoint, load_latest
    ck = load_latest(run)
    assert ck["path"] == str(run / "checkpoint-latest.pt") and ck["counters"]["iteration"] >= 2
    assert all(torch.isfinite(v).all() for v in ck["G"].values() if v.is_floating_point())
    for p in run.glob("checkpoint-*.pt"):
        load_checkpoint(p)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_hung_process_times_out_instead_of_hanging_the_others(tmp_path):
    timeout_s = 8
    proc = _start_long_run(tmp_path, "h", timeout_s=timeout_s)
    run = tmp_path / "h"
    _wait_for_snapshots(proc, run)
    ranks = _ranks(proc.pid)
    os.kill(ranks[1], signal.SIGSTOP)  # alive but silent: only the collective timeout can notice
    t0 = time.time()
    try:
        while _pid_alive(ranks[0]) and time.time() - t0 < timeout_s + 60:
            time.sleep(0.2)
        waited = time.time() - t0
    finally:
        os.kill(ranks[1], signal.SIGCONT)
    out = _finish(proc, 60, f"rank 0 still running {waited:.0f} s after rank 1 stopped")
    assert waited < timeout_s + 30, (waited, out[-3000:])
    assert proc.returncode != 0
    assert "lost contact with the others" in out and "Timed out" in out, out[-3000:]
    from ilsgan.checkpoints import load_latest
    assert load_latest(run)["counters"]["iteration"] >= 2
