"""Faults during a run lose nothing: a full disk or an unwritable folder while snapshotting, an unreadable
newest checkpoint on --resume latest, snapshot retention and names, images that break under a run,
and no growth of memory or open files over a long run."""

import builtins
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ilsgan import checkpoints as ck
from ilsgan import train
from ilsgan.training import RunAborted

from _train_tiny import TINY_CFG_ARGS, run_tiny, tiny_cfg


class _LimitedFile:
    """A file opened for writing that accepts ``budget`` bytes, then raises ``OSError(err)``."""

    def __init__(self, f, budget, err):
        self._f, self._left, self._err = f, budget, err

    def write(self, b):
        if len(b) > self._left:
            self._f.write(bytes(b[:self._left]))
            self._left = 0
            raise OSError(self._err, os.strerror(self._err), self._f.name)
        self._left -= len(b)
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class DiskFault:
    """Replaces ``open`` in ilsgan.checkpoints: the checkpoint writes numbered in ``fail_on`` (1-based;
    None = all) fail with ``err`` after ``budget`` bytes, mid-file; every other write goes through."""

    def __init__(self, monkeypatch, fail_on=None, err=errno.ENOSPC, budget=10_000):
        self.calls, self.fail_on, self.err, self.budget = 0, fail_on, err, budget
        monkeypatch.setattr(ck, "open", self, raising=False)

    def __call__(self, path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        if "w" not in mode:
            return f
        self.calls += 1
        if self.fail_on is None or self.calls in self.fail_on:
            return _LimitedFile(f, self.budget, self.err)
        return f


def _state(cfg, nimg):
    from ilsgan.networks import build_networks
    torch.manual_seed(nimg)
    G, D = build_networks(cfg)
    return dict(config=cfg, G=G, D=D, G_ema=G, counters={"cur_nimg": nimg, "iteration": nimg // 4})


def _no_temp_files(d):
    return [p.name for p in Path(d).iterdir() if ".tmp" in p.name] == []


def test_full_disk_mid_file_keeps_the_previous_checkpoints(tmp_path, monkeypatch):
    cfg = tiny_cfg()
    latest = ck.save_checkpoint(tmp_path / "checkpoint-latest.pt", **_state(cfg, 4))
    first = ck.copy_snapshot(latest, 4)
    fault = DiskFault(monkeypatch, err=errno.ENOSPC)
    with pytest.raises(OSError) as e:
        ck.save_checkpoint(tmp_path / "checkpoint-latest.pt", **_state(cfg, 8))
    assert e.value.errno == errno.ENOSPC and fault.calls == 1
    assert ck.load_checkpoint(latest)["counters"]["cur_nimg"] == 4  # the old latest, whole
    assert ck.load_checkpoint(first)["counters"]["cur_nimg"] == 4
    assert _no_temp_files(tmp_path)  # the half-written file does not eat the disk


def _tiny_run(tmp_path, monkeypatch=None, **kw):
    logs = []
    kw.setdefault("max_iters", 4)
    r = run_tiny(tmp_path / "run", tiny_cfg(aug="noaug", snap=0.004, **kw), log_fn=logs.append)
    return r, logs


def test_training_goes_on_after_a_failed_snapshot(tmp_path, monkeypatch):
    """Snapshot 2 of 4 hits a full disk mid-file: reported, training goes on, the others are written."""
    DiskFault(monkeypatch, fail_on={2})
    r, logs = _tiny_run(tmp_path, keep=None)
    run = tmp_path / "run"
    assert r["status"] == "done" and r["iteration"] == 4
    assert [e["error"].split(":")[0] for e in r["snapshot_errors"]] == ["ENOSPC"]
    msg = [m for m in logs if "could not write the checkpoint" in m]
    assert len(msg) == 1 and "0.008 kimg" in msg[0] and "training goes on" in msg[0]
    assert "checkpoint-latest.pt (0.004 kimg), is intact" in msg[0]  # names what is kept
    assert "No space left on device: " + str(tmp_path / "run" / "checkpoint-latest.pt") + ")" in msg[0]
    assert not (run / "checkpoint-000000.008.pt").exists()
    for n in (4, 12, 16):
        assert ck.load_checkpoint(run / f"checkpoint-{ck.snapshot_tag(n)}.pt")["counters"]["cur_nimg"] == n
    assert ck.load_checkpoint(run / "checkpoint-latest.pt")["counters"]["iteration"] == 4
    recs = [json.loads(l) for l in open(run / "log.jsonl")]
    assert recs[-1]["Snapshot/failed"] == 1
    assert _no_temp_files(run)


def test_unwritable_folder_at_the_end_stops_with_a_clear_error(tmp_path, monkeypatch):
    """From snapshot 3 on the folder refuses writes (EACCES): the last one cannot be saved, so the run
    ends with RunAborted naming the newest checkpoint on disk, which stays readable."""
    DiskFault(monkeypatch, fail_on=set(range(3, 100)), err=errno.EACCES, budget=0)
    with pytest.raises(RunAborted) as e:
        _tiny_run(tmp_path, max_iters=3, keep=None)
    msg = str(e.value)
    assert "training finished at 0.012 kimg" in msg and "EACCES" in msg
    assert "checkpoint-latest.pt (0.008 kimg)" in msg
    run = tmp_path / "run"
    assert ck.load_checkpoint(run / "checkpoint-latest.pt")["counters"]["iteration"] == 2
    assert ck.load_latest(run)["counters"]["iteration"] == 2
    assert _no_temp_files(run)


def test_resume_latest_skips_an_unreadable_newest_checkpoint(tmp_path, capsys):
    base = TINY_CFG_ARGS + ["--no-progress", "--no-tensorboard", "--data", "synthetic:easy", "--aug", "noaug",
                            "--outdir", str(tmp_path), "--threads", "1", "--device", "cpu"]
    assert train.main(base + ["--name", "r", "--kimg", "0.008", "--snap", "0.004", "--keep", "all"]) == 0
    run = tmp_path / "r"
    latest = run / "checkpoint-latest.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # truncated (a partial copy)
    capsys.readouterr()
    assert train.main(base + ["--resume", "latest", "--kimg", "0.012"]) == 0
    out = capsys.readouterr()
    assert "skipping checkpoint" in out.err and str(latest) in out.err and "unreadable" in out.err
    assert f"resumed from {run / 'checkpoint-000000.008.pt'} at 0.008 kimg" in out.out
    recs = [json.loads(l) for l in open(run / "log.jsonl")]
    assert recs[-1]["Progress/iteration"] == 3
    # nothing readable at all: one clear error
    for p in run.glob("checkpoint-*.pt"):
        p.write_bytes(b"junk")
    assert train.main(base + ["--resume", "latest"]) == 2
    assert "none of the" in capsys.readouterr().err


def test_snapshot_names_and_retention(tmp_path):
    assert ck.snapshot_tag(400) == "000000.400" and ck.snapshot_tag(5024) == "000005.024"
    assert ck.snapshot_nimg("checkpoint-000005.024.pt") == 5024
    assert ck.snapshot_nimg("checkpoint-000005.pt") == 5000  # the older name is still understood
    assert ck.snapshot_nimg("checkpoint-latest.pt") is None
    names = [f"checkpoint-{ck.snapshot_tag(n)}.pt" for n in (400, 999, 1000, 5024, 12000, 123456)]
    assert sorted(names) == names  # fixed width: sorting by name is sorting by progress
    r, _ = _tiny_run(tmp_path, max_iters=5, keep=2)
    run = tmp_path / "run"
    numbered = sorted(p.name for p in run.glob("checkpoint-0*.pt"))
    assert numbered == ["checkpoint-000000.016.pt", "checkpoint-000000.020.pt"]  # 5 snapshots, newest 2 kept
    assert len(list(run.glob("grid-*.png"))) == 5  # one per snapshot, unique names
    # an old-style name is found by --resume latest and pruned like the others
    old = tmp_path / "old"
    old.mkdir()
    os.replace(run / "checkpoint-000000.016.pt", old / "checkpoint-000000.pt")
    assert ck.find_latest(old) == old / "checkpoint-000000.pt"
    assert ck.load_latest(old)["counters"]["cur_nimg"] == 16
    (old / "notes.pt").write_bytes(b"x")
    os.utime(old / "checkpoint-000000.pt", (1, 1))
    (old / "checkpoint-000003.500.pt").write_bytes(b"newer")
    assert ck.prune_snapshots(old, 1) == [old / "checkpoint-000000.pt"]
    assert (old / "notes.pt").exists() and (old / "checkpoint-000003.500.pt").exists()
    assert ck.prune_snapshots(old, None) == []
    assert "--keep N" in train.build_parser().format_help()


# ---------------------------------------------------------------------------------------------------
# Data that changes under a run

def _image_folder(d, n):
    d.mkdir()
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rng.randint(0, 255, (20, 20, 3), dtype=np.uint8)).save(d / f"im{i:03d}.png")
    return d


def test_images_deleted_or_truncated_under_a_run_are_skipped_and_logged(tmp_path):
    from ilsgan.data import open_dataset
    folder = _image_folder(tmp_path / "imgs", 40)
    ds = open_dataset(str(folder), 16)
    assert len(ds) == 40
    (folder / "im003.png").unlink()  # after indexing
    b = (folder / "im007.png").read_bytes()
    (folder / "im007.png").write_bytes(b[: len(b) // 2])
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        r = run_tiny(tmp_path / "run", tiny_cfg(aug="noaug", data=str(folder), max_iters=25), dataset=ds,
                     log_fn=lambda m: None)
    assert r["status"] == "done"
    reads, failures = ds.read_counter.totals()
    assert failures >= 1 and reads >= 100
    recs = [json.loads(l) for l in open(tmp_path / "run" / "log.jsonl")]
    assert recs[-1]["Data/skipped"] == failures


def test_too_many_unreadable_images_stop_the_run_with_a_clear_error(tmp_path):
    from ilsgan.data import open_dataset
    folder = _image_folder(tmp_path / "imgs", 40)
    ds = open_dataset(str(folder), 16)
    cfg = tiny_cfg(aug="noaug", data=str(folder))
    r0 = run_tiny(tmp_path / "run", cfg.replace(max_iters=2), dataset=ds, log_fn=lambda m: None)
    assert r0["iteration"] == 2
    for i in range(40):
        if i % 8:
            (folder / f"im{i:03d}.png").unlink()  # 35 of 40 gone: the disk was cleaned under the run
    with pytest.warns(UserWarning), pytest.raises(RunAborted) as e:
        run_tiny(tmp_path / "run", cfg.replace(max_iters=1000), resume=tmp_path / "run" / "checkpoint-latest.pt",
                 dataset=ds, log_fn=lambda m: None)
    msg = str(e.value)
    assert msg.startswith("--data: ") and "image reads failed" in msg and "--resume latest" in msg
    saved = ck.load_checkpoint(tmp_path / "run" / "checkpoint-latest.pt")  # progress kept
    assert 2 < saved["counters"]["iteration"] < 1000


def test_zip_truncated_under_a_run_fails_cleanly(tmp_path):
    import zipfile
    from ilsgan.data import DatasetError, open_dataset
    folder = _image_folder(tmp_path / "imgs", 6)
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
    ds = open_dataset(str(z), 16)
    z.write_bytes(z.read_bytes()[:300])  # truncated after indexing
    with pytest.warns(UserWarning):
        with pytest.raises(DatasetError, match="no readable image left"):
            ds[0]
    assert ds.read_counter.totals() == (6, 6)


# ---------------------------------------------------------------------------------------------------
# Long runs do not grow

def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_memory_and_file_handles_stay_flat(tmp_path, monkeypatch):
    """300 iterations of a tiny run with a snapshot (checkpoint, grid, plot, pruning) every 10. The
    first snapshots grow the process (matplotlib's caches, allocator arenas: about +35 MB, then a few MB
    up and down), so warm-up is 100 iterations; over the 200 after it resident memory stays within
    12 MB (a leak of 60 KB per iteration would exceed it) and the number of open files does not change."""
    import ilsgan.training.loop as loop
    samples = []
    orig = loop.update_ema

    def probe(*a, **k):
        samples.append((_rss_mb(), _open_fds()))
        return orig(*a, **k)
    monkeypatch.setattr(loop, "update_ema", probe)
    cfg = tiny_cfg(aug="noaug", kimg=10, snap=0.04, tick=0.04, max_iters=300, keep=2)
    run_tiny(tmp_path / "run", cfg, log_fn=lambda m: None)
    assert len(samples) == 300
    rss = [s[0] for s in samples[100:]]
    fds = [s[1] for s in samples[100:]]
    assert max(rss) - rss[0] < 12, [round(x, 1) for x in rss[::10]]
    assert max(fds) == min(fds), sorted(set(fds))
    assert len(list((tmp_path / "run").glob("checkpoint-0*.pt"))) == 2
