"""The ILSGAN training loop: :func:`train` runs a :class:`~ilsgan.training.prepare.PreparedRun`.

Each iteration runs the G step (non-saturating loss, mask priors, ILS term), the D step (logistic
loss on reals and perturbed fakes), every ``D_reg_interval`` iterations the lazy R1 step (weighted
by the interval), then the G_ema update and the adaptive augmentation. Adam carries the
lazy-regularization correction. Non-finite gradients are replaced or skipped (``nan_guard``). A tick
(every ``tick`` kimg) writes one JSONL/TensorBoard record and the progress line; a snapshot (every
``snap`` kimg) writes the image grid, the plot and the checkpoints. A resumed run continues exactly
(weights, optimizer and augmentation state, counters, every RNG, the data order); a signal saves
``checkpoint-latest.pt`` and stops at the next iteration boundary.

Faults (:mod:`ilsgan.training.faults`): a snapshot that cannot be written (disk full, folder made
unwritable) is reported and training *goes on*: the previous checkpoints stay intact (every file is
written beside them and renamed into place), the next snapshot tries again, and stopping would throw
away for certain the progress made since the last good snapshot, while space is often freed meanwhile.
Only when the final or the on-signal checkpoint fails does the run end with an error (:class:`RunAborted`)
naming the newest checkpoint that is on disk. Image files that break under the run are skipped and
logged (``Data/skipped``) until more than ``DEFAULT_MAX_DATA_FAILURES`` of the reads fail; a lost peer
process ends every other one within ``dist_timeout`` seconds.
"""

from __future__ import annotations

import copy
import errno
import functools
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from .. import checkpoints as ck
from ..data import DatasetError
from ..losses.gan import ILSGANLoss
from . import distributed as dd
from .ema import ema_beta, update_ema
from .faults import DEFAULT_MAX_DATA_FAILURES, DataFailureMonitor, PeerLost, RunAborted, is_comm_failure
from .prepare import PreparedRun, StopRequest
from .snapshot import fixed_latents, save_image_grid, save_layer_grid
from .stats import JsonlLogger, StatsCollector, TensorBoardWriter, collapse_warning, plot_log

__all__ = ["train", "Trainer", "InfiniteSampler", "lazy_adam_params"]


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless index stream: epoch ``e`` is a permutation from ``RandomState(seed + e)``; rank ``r``
    of ``K`` takes positions ``r, r+K, ...``. ``start`` = number of samples (all ranks) already consumed,
    so a resumed run reads exactly the images an uninterrupted run would. Uses no global RNG."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0):
        super().__init__()
        if length <= 0:
            raise ValueError("InfiniteSampler: the dataset is empty")
        self.length, self.rank, self.world, self.seed, self.start = length, rank, world_size, seed, int(start)

    def __iter__(self) -> Iterator[int]:
        pos = self.start + self.rank
        perm_epoch, perm = -1, None
        while True:
            epoch, i = divmod(pos, self.length)
            if epoch != perm_epoch:
                perm = np.random.RandomState((self.seed + epoch) % (2 ** 32)).permutation(self.length)
                perm_epoch = epoch
            yield int(perm[i])
            pos += self.world


def lazy_adam_params(lr: float, betas, reg_interval: Optional[int]):
    """Adam (lr, betas) with the lazy-regularization correction ``c = k / (k + 1)``: ``lr * c``,
    ``beta ** c`` (no change when ``reg_interval`` is None/0)."""
    if not reg_interval:
        return float(lr), tuple(float(b) for b in betas)
    c = reg_interval / (reg_interval + 1)
    return float(lr) * c, tuple(float(b) ** c for b in betas)


def _guard_grads(params, mode: str) -> bool:
    """Check the gradients for NaN/Inf. ``"replace"``: nan_to_num in place (NaN -> 0, ±Inf -> ±1e5, as
    the release does). ``"skip"``: leave them; the caller skips the step. Returns True if any was bad."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return False
    bad = not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
    if bad and mode == "replace":
        for g in grads:
            torch.nan_to_num_(g, nan=0.0, posinf=1e5, neginf=-1e5)
    return bad


def _os_error(e: OSError) -> str:
    """``ENOSPC: No space left on device`` style text of an OSError (its path is named by the caller)."""
    code = errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    return f"{code + ': ' if code else ''}{e.strerror or e}"


def _abort_on_lost_peer(fn):
    """Turn a failed or timed-out collective of a multi-process run into :class:`PeerLost` with one clear
    line (instead of a gloo traceback) and leave the process group without waiting for the lost peer."""

    @functools.wraps(fn)
    def wrapper(run: PreparedRun):
        try:
            return fn(run)
        except Exception as e:  # noqa: BLE001 - only collective failures are translated
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world <= 1 or not is_comm_failure(e):
                raise
            dd.abort()
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's "[/path/to/pair.cc:553] " source prefix
            raise PeerLost(
                f"process {os.environ.get('RANK', '?')} of {world} lost contact with the others ({first}); another "
                f"process died or hung, so this one stops too. The checkpoints in {str(run.run_dir)!r} are intact: "
                f"continue with --resume latest") from e
    return wrapper


@_abort_on_lost_peer
def train(run: PreparedRun) -> Dict[str, Any]:
    """Train the prepared run (:func:`ilsgan.training.prepare_run`) and return a summary dict.

    Writes into ``run.run_dir``: ``config.json``, ``log.jsonl``, ``reals.png``, ``grid-KKKKKK.III.png``,
    ``plot.png``, ``checkpoint-KKKKKK.III.pt`` and ``checkpoint-latest.pt`` (KKKKKK.III = kimg with the
    images, :func:`ilsgan.checkpoints.snapshot_tag`); only the ``keep`` newest numbered checkpoints are
    kept (None: all). Stops after ``kimg``, after ``max_iters`` iterations in total, at the first tick
    after ``minutes`` minutes of training in this call (a wall-clock budget: the run then ends as
    "done", with a full snapshot), or when ``run.stop`` is requested (a checkpoint is saved in every
    case). The summary: ``status`` ("done"/"interrupted"), ``budget_hit``, ``signal``, ``cur_nimg``,
    ``iteration``, ``run_dir``, ``last_record``, ``snapshot`` (paths), ``nan_events``, ``dist``,
    ``seconds``, ``snapshot_errors``, ``tensorboard_error``.

    Raises :class:`RunAborted` when the run cannot go on: the final / on-signal checkpoint cannot be
    written, too many of the image reads of a window fail (the progress is saved to
    ``checkpoint-latest.pt`` first), or a peer process is lost (:class:`~ilsgan.training.faults.PeerLost`;
    ``dist_timeout`` seconds bound every collective). See the module docstring.
    """
    return Trainer(run).train()


class Trainer:
    """One training run, phase by phase: :meth:`g_step`, :meth:`d_step`, :meth:`r1_step` (the
    optimizer steps of one iteration, :meth:`iteration_step`), :meth:`ema_step`, :meth:`tick`,
    :meth:`snapshot`; :meth:`train` is the loop around them. Built from a prepared run: networks,
    augmentation, optimizers and loss, the resume state, the data stream, the output files."""

    def __init__(self, run: PreparedRun):
        self.prep, self.cfg = run, run.config
        self.run_dir, self.log_fn, self.stop = Path(run.run_dir), run.log_fn, run.stop
        self.impl = self.cfg.session.impl
        self._join_processes(run.device)
        self._seed()
        self._watch_data(run.dataset)
        self._build()
        self.cur_nimg, self.iteration, self.nan_events = 0, 0, {"G": 0, "D": 0}
        if run.checkpoint is not None:
            self._restore(run.checkpoint)
        elif self.world > 1:
            torch.manual_seed(self.cfg.run.seed + 1000003 * self.rank)
        self.G.train().requires_grad_(False)
        self.D.train().requires_grad_(False)
        self._open_data_stream()

        run_cfg, session = self.cfg.run, self.cfg.session
        self.total_nimg = int(round(run_cfg.kimg * 1000))
        self.snap_nimg = max(1, int(round(run_cfg.snap * 1000)))
        self.tick_nimg = max(1, int(round(run_cfg.resolved_tick() * 1000)))
        self.grid_z = fixed_latents(session.grid_samples, self.G.z_dim, run_cfg.seed)
        self.logger = self.tb = self.pbar = None
        if self.dist.is_main:
            self._open_outputs()
        self.collector = StatsCollector()
        self.snapshot_errors: list = []
        self.saved_ok: Dict[str, Any] = {"path": run.resumed_from,
                                         "nimg": self.cur_nimg if run.checkpoint is not None else None}
        self.warned: set = set()

    # -- set-up --------------------------------------------------------------------------------
    def _join_processes(self, device: torch.device) -> None:
        """Join the torchrun process group (if any): one device and ``batch / K`` images per process."""
        self.dist = dd.init_from_env(str(device), timeout_s=self.cfg.session.dist_timeout)
        if self.dist.enabled and device.type == "cuda":
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.world, self.rank = self.dist.world_size, self.dist.rank
        self.batch = self.cfg.optim.batch  # divisible by the world size: prepare_run checks it
        self.batch_gpu = self.batch // self.world

    def _seed(self) -> None:
        """Identical initial weights on every process; per-process streams afterwards."""
        seed = self.cfg.run.seed
        torch.manual_seed(seed)
        np.random.seed(seed % (2 ** 32))
        random.seed(seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _watch_data(self, dataset) -> None:
        self.dataset = dataset
        if getattr(dataset, "num_skipped", 0):
            self._log(f"warning: {dataset.num_skipped} unreadable image(s) skipped in {self.cfg.data.data!r}")
        self.data_monitor = DataFailureMonitor(getattr(dataset, "read_counter", None),
                                               max_fraction=DEFAULT_MAX_DATA_FAILURES,
                                               what=repr(str(self.cfg.data.data)))

    def _build(self) -> None:
        """G, D, G_ema (the same on every process), augmentation, the two Adams, the loss."""
        from ..augment import AdaptiveAugment, AugmentPipe
        from ..networks import build_networks
        cfg, device = self.cfg, self.device
        G, D = build_networks(cfg, impl=self.impl, device=device)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        dd.broadcast_module(G)
        dd.broadcast_module(D)
        dd.broadcast_module(G_ema)
        self.G, self.D, self.G_ema = G, D, G_ema
        aug = cfg.augment
        self.augment_pipe, self.ada = None, None
        if aug.aug == "ada":
            self.augment_pipe = AugmentPipe(aug.aug_pipe, p=aug.aug_p, impl=self.impl).to(device)
            self.augment_pipe.train().requires_grad_(False)
            if aug.ada_target is not None:
                self.ada = AdaptiveAugment(self.augment_pipe, target=aug.ada_target, interval=aug.ada_interval,
                                           speed_kimg=aug.ada_kimg)
        opt = cfg.optim
        G_lr, G_betas = lazy_adam_params(opt.glr, opt.betas, opt.G_reg_interval)
        D_lr, D_betas = lazy_adam_params(opt.dlr, opt.betas, opt.D_reg_interval)
        self.G_opt = torch.optim.Adam(G.parameters(), lr=G_lr, betas=G_betas, eps=opt.eps)
        self.D_opt = torch.optim.Adam(D.parameters(), lr=D_lr, betas=D_betas, eps=opt.eps)
        self.loss = ILSGANLoss(G, D, self.augment_pipe, cfg.loss, r1_gamma=cfg.r1_weight(), impl=self.impl,
                               ada_stats=self.ada.accumulate if self.ada else None)
        self.reg_k = int(opt.D_reg_interval or 0)
        self.ema_kimg = opt.resolved_ema_kimg()

    def _open_data_stream(self) -> None:
        """The images of this process, from where the run stands (:class:`InfiniteSampler`)."""
        seed, workers = self.cfg.run.seed, self.cfg.session.workers
        sampler = InfiniteSampler(len(self.dataset), self.rank, self.world, seed=seed, start=self.cur_nimg)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_gpu, sampler=sampler,
                                             num_workers=workers, pin_memory=self.device.type == "cuda",
                                             drop_last=True, persistent_workers=workers > 0,
                                             prefetch_factor=2 if workers else None,
                                             generator=torch.Generator().manual_seed(seed))
        self.data_iter = iter(loader)

    def _restore(self, ckpt: Dict[str, Any]) -> None:
        """Weights, optimizer and augmentation state, counters and (rank 0) every RNG of a checkpoint."""
        try:
            self.G.load_state_dict(ckpt["G"])
            self.D.load_state_dict(ckpt["D"])
            self.G_ema.load_state_dict(ckpt["G_ema"])
        except RuntimeError as e:
            raise ck.CheckpointError(f"checkpoint {ckpt['path']!r} does not match the networks of this config: "
                                     f"{e}") from e
        if ckpt.get("G_opt"):
            self.G_opt.load_state_dict(ckpt["G_opt"])
        if ckpt.get("D_opt"):
            self.D_opt.load_state_dict(ckpt["D_opt"])
        if self.ada is not None and ckpt.get("augment"):
            self.ada.load_state_dict(ckpt["augment"])
        elif self.augment_pipe is not None and ckpt.get("augment") and "p" in ckpt["augment"]:
            self.augment_pipe.p.fill_(float(ckpt["augment"]["p"]))
        c = ckpt.get("counters", {})
        self.cur_nimg = int(c.get("cur_nimg", 0))
        self.iteration = int(c.get("iteration", 0))
        self.nan_events = dict(c.get("nan_events", self.nan_events))
        if self.rank == 0:
            ck.restore_rng(ckpt.get("rng"))
        else:
            torch.manual_seed(self.cfg.run.seed + 1000003 * self.rank + self.cur_nimg)
        self._log(f"resumed from {ckpt['path']} at {self.cur_nimg / 1000:.3f} kimg (iteration {self.iteration})")

    def _open_outputs(self) -> None:
        """Rank 0: config.json, the log files, reals.png (nothing trained yet: a failure stops the run)."""
        run_dir, prep = self.run_dir, self.prep
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / "config.json", "w") as f:
                json.dump({"config": self.cfg.to_dict(), "op_backends": prep.op_backends,
                           "precision": prep.precision,
                           "world_size": self.world, "resumed_from": prep.resumed_from,
                           "resume_changes": {k: [a, b] for k, a, b in prep.changes}}, f, indent=2)
            self.logger = JsonlLogger(run_dir / "log.jsonl")
            self.tb = TensorBoardWriter(run_dir / "tensorboard", enabled=not self.cfg.session.no_tensorboard)
            if not (run_dir / "reals.png").exists():
                n = min(self.cfg.session.grid_samples, len(self.dataset))
                reals = torch.stack([_image_of(self.dataset[i]) for i in range(n)])
                save_image_grid(reals, run_dir / "reals.png", cols=12)
        except OSError as e:
            raise RunAborted(f"cannot write the run directory {str(run_dir)!r} ({_os_error(e)}: "
                             f"{getattr(e, 'filename', None) or run_dir})") from e

    def _log(self, msg: str) -> None:
        if self.dist.is_main:
            self.log_fn(msg)

    def _say(self, msg: str) -> None:
        """A message that must not break the progress bar."""
        (self.pbar.write(msg) if self.pbar is not None else self.log_fn(msg))

    def _warn_once(self, kind: str, msg: str) -> None:
        if kind not in self.warned:  # a full disk fails every write: one line per kind, not one per tick
            self.warned.add(kind)
            self._say(msg)

    # -- one iteration -------------------------------------------------------------------------
    def _next_images(self) -> torch.Tensor:
        try:
            images = next(self.data_iter)
        except DatasetError as e:
            raise RunAborted(f"--data: {e}") from e
        return _image_of(images).to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1

    def _phase(self, name: str, images: torch.Tensor, gain: int = 1) -> None:
        """One loss phase and its optimizer step: fresh latents, gradients (summed over processes),
        the non-finite guard, Adam."""
        module, opt, key = (self.G, self.G_opt, "G") if name == "Gmain" else (self.D, self.D_opt, "D")
        gen_z = torch.randn([self.batch_gpu, self.G.z_dim], device=self.device)
        opt.zero_grad(set_to_none=True)
        module.requires_grad_(True)
        stats = self.loss.accumulate_gradients(name, images, gen_z, gain=gain, cur_nimg=self.cur_nimg)
        module.requires_grad_(False)
        params = list(module.parameters())
        if self.world > 1:
            dd.sync_grads(params, self.world)
        nan_guard = self.cfg.optim.nan_guard
        bad = _guard_grads(params, nan_guard)
        if bad:
            self.nan_events[key] += 1
            stats[f"Guard/nonfinite_{key}"] = torch.tensor(1.0)
        if not (bad and nan_guard == "skip"):
            opt.step()
        self.collector.add(stats)

    def g_step(self, images: torch.Tensor) -> None:
        """G: adversarial loss on the perturbed composite, mask priors, ILS term."""
        self._phase("Gmain", images)

    def d_step(self, images: torch.Tensor) -> None:
        """D: logistic loss on reals and perturbed fakes (with R1 in the same pass when not lazy)."""
        self._phase("Dmain" if self.reg_k else "Dboth", images)

    def r1_step(self, images: torch.Tensor) -> None:
        """Lazy R1 on reals, weighted by its interval."""
        self._phase("Dreg", images, gain=self.reg_k)

    def iteration_step(self, images: torch.Tensor) -> None:
        self.g_step(images)
        self.d_step(images)
        if self.reg_k and self.iteration % self.reg_k == 0:
            self.r1_step(images)

    def ema_step(self) -> None:
        """G_ema towards G, then the counters and the augmentation probability move on."""
        update_ema(self.G_ema, self.G, ema_beta(self.cur_nimg, self.batch, self.ema_kimg, self.cfg.optim.ema_rampup))
        self.cur_nimg += self.batch
        self.iteration += 1
        if self.ada is not None:
            self.ada.step(self.batch)
        if self.pbar is not None:
            self.pbar.update(min(self.batch, max(0, self.total_nimg - self.pbar.n)))

    # -- ticks and snapshots -------------------------------------------------------------------
    def _finished(self) -> bool:
        max_iters = self.cfg.session.max_iters
        return self.cur_nimg >= self.total_nimg or (max_iters is not None and self.iteration >= max_iters)

    def tick(self, done: bool) -> bool:
        """One log record (averaged over the tick and the processes) and the progress line. Returns
        ``done``, which becomes True when the wall-clock budget is spent."""
        rec = self.collector.reduce(self.world)
        now = time.time()
        minutes = self.cfg.session.minutes
        if minutes is not None and not done:
            # every rank must agree, or one would wait for the others in the next collective
            over = now - self.t_start >= minutes * 60
            done = dd.any_flag(over, self.world, self.device) if self.world > 1 else over
            self.budget_hit = done
        dt, dn = now - self.t_tick, self.cur_nimg - self.tick_start_nimg
        rec = {"Progress/kimg": self.cur_nimg / 1000, "Progress/iteration": self.iteration,
               "Progress/augment_p": float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0,
               "Progress/ada_rt": (self.ada.rt if self.ada is not None and self.ada.rt is not None else None),
               "Timing/sec_per_kimg": dt / max(dn, 1) * 1000, "Timing/kimg_per_sec": dn / 1000 / max(dt, 1e-9),
               "Timing/sec_per_iter": dt / max(dn / self.batch, 1e-9), "Timing/total_sec": now - self.t_start,
               "Guard/nan_events_G": self.nan_events["G"], "Guard/nan_events_D": self.nan_events["D"],
               **rec, "Progress/time": now}
        if self.data_monitor.counter is not None:
            skipped = torch.tensor([float(self.data_monitor.totals()[1])], device=self.device)
            rec["Data/skipped"] = int(dd.all_reduce_mean(skipped, self.world).item() * self.world)
        if self.snapshot_errors:
            rec["Snapshot/failed"] = len(self.snapshot_errors)
        warn = collapse_warning(rec)
        if warn:
            rec["warning"] = warn
        if self.dist.is_main:
            self._report(rec, warn, now)
        self.last_record = rec
        self.t_tick, self.tick_start_nimg = now, self.cur_nimg
        self.next_tick = (self.cur_nimg // self.tick_nimg + 1) * self.tick_nimg
        return done

    def _report(self, rec: Dict[str, Any], warn: Optional[str], now: float) -> None:
        try:
            self.logger.write(rec)
            self.tb.write(rec, self.cur_nimg / 1000)
        except OSError as e:  # a full disk must not end the run; the checkpoints report it too
            self._warn_once("log", f"warning: could not write log.jsonl / TensorBoard ({_os_error(e)}); "
                                   f"training goes on")
        if warn:
            self._say(f"warning at {self.cur_nimg / 1000:.2f} kimg: {warn}")
        summary = (f"G {rec.get('Loss/G/adv', float('nan')):.3f} "
                   f"D {rec.get('Loss/D/real', float('nan')) + rec.get('Loss/D/fake', float('nan')):.3f} "
                   f"area {rec.get('Mask/area', float('nan')):.2f} p {rec['Progress/augment_p']:.3f} "
                   f"{rec['Timing/sec_per_kimg']:.1f}s/kimg")
        if self.pbar is not None:
            self.pbar.set_postfix_str(summary, refresh=False)
        else:  # no bar (--no-progress, logs to a file): one line per tick, with an ETA
            eta = (self.total_nimg - self.cur_nimg) / 1000 * rec["Timing/sec_per_kimg"]
            minutes = self.cfg.session.minutes
            if minutes is not None:
                eta = min(eta, max(0.0, minutes * 60 - (now - self.t_start)))
            self.log_fn(f"kimg {self.cur_nimg / 1000:.2f}/{self.total_nimg / 1000:g}  {summary}  "
                        f"ETA {eta / 60:.1f} min")

    def _save(self, numbered: bool) -> Optional[Path]:
        """Checkpoint-latest (and the numbered snapshot); None when it could not be written."""
        cfg = self.cfg
        state = dict(config=cfg, G=self.G, D=self.D, G_ema=self.G_ema, G_opt=self.G_opt, D_opt=self.D_opt,
                     augment=self.ada.state_dict() if self.ada else (
                         {"p": float(self.augment_pipe.p)} if self.augment_pipe else None),
                     rng=ck.capture_rng(),
                     counters={"cur_nimg": self.cur_nimg, "iteration": self.iteration, "nan_events": self.nan_events},
                     meta={"world_size": self.world})
        try:
            latest = ck.save_checkpoint(self.run_dir / "checkpoint-latest.pt", **state)
            self.saved_ok.update(path=str(latest), nimg=self.cur_nimg)
            if not numbered:
                return latest
            return ck.copy_snapshot(latest, self.cur_nimg, keep=cfg.session.keep, warn=self.log_fn)
        except OSError as e:
            where = str(getattr(e, "filename", None) or self.run_dir).split(".tmp-")[0]  # the file meant, not its temp
            ok = self.saved_ok
            kept = (f"the newest checkpoint on disk, {ok['path']} ({ok['nimg'] / 1000:.3f} kimg), is intact"
                    if ok["path"] else "no earlier checkpoint of this run exists")
            msg = (f"error: could not write the checkpoint at {self.cur_nimg / 1000:.3f} kimg ({_os_error(e)}: "
                   f"{where}); {kept}" + ("; training goes on and tries again at the next snapshot" if numbered else ""))
            self.snapshot_errors.append({"kimg": self.cur_nimg / 1000, "error": _os_error(e), "path": str(where)})
            self._say(msg)
            return None

    def snapshot(self) -> Dict[str, Path]:
        """Rank 0: the checkpoints, the image grid of G_ema and the plot; a failure is reported and
        training goes on."""
        out: Dict[str, Path] = {}
        if not self.dist.is_main:
            return out
        tag = ck.snapshot_tag(self.cur_nimg)
        saved = self._save(numbered=True)
        if saved is not None:
            out["checkpoint"] = saved
        try:
            out["grid"] = save_layer_grid(self.G_ema, self.grid_z, self.run_dir / f"grid-{tag}.png", cols=12,
                                          device=self.device)
        except OSError as e:
            self._warn_once("grid", f"warning: could not write grid-{tag}.png ({_os_error(e)}); training goes on")
        try:
            p = plot_log(self.run_dir / "log.jsonl", self.run_dir / "plot.png")
            if p:
                out["plot"] = p
        except Exception as e:  # noqa: BLE001 - a plotting problem must not kill training
            self.log_fn(f"warning: could not draw plot.png ({type(e).__name__}: {e})")
        return out

    def must_save(self, why: str) -> Dict[str, Path]:
        """The checkpoint at the end of the run or on a signal: if it cannot be written the progress
        since the last snapshot is lost, so the run ends with an error that says what is on disk."""
        saved = self._save(numbered=False)
        if saved is None:
            ok = self.saved_ok
            kept = (f"the newest checkpoint on disk is {ok['path']} ({ok['nimg'] / 1000:.3f} kimg)"
                    if ok["path"] else "no checkpoint of this run is on disk")
            err = self.snapshot_errors[-1]
            if self.dist.enabled:
                dd.cleanup()  # the other ranks are already waiting in the end-of-run barrier
            raise RunAborted(f"{why} at {self.cur_nimg / 1000:.3f} kimg, but its checkpoint could not be written "
                             f"({err['error']}: {err['path']}); {kept}")
        return {"checkpoint": saved}

    def _stop_for_data(self, trouble: Optional[str]) -> None:
        """Too many image reads failed: the weights are consistent at this iteration boundary, so
        save them, then stop."""
        if self.dist.is_main:
            self.must_save("stopped because the training images fail to load")
        if self.dist.enabled:
            dd.cleanup()
        raise RunAborted(f"--data: {trouble or 'another process found too many unreadable images'}; "
                         f"progress saved to {self.run_dir / 'checkpoint-latest.pt'}: fix the data, then "
                         f"continue with --resume latest")

    def _open_progress_bar(self) -> None:
        minutes = self.cfg.session.minutes
        if self.cfg.session.no_progress or not self.dist.is_main:
            return
        try:
            from tqdm.auto import tqdm
            self.pbar = tqdm(total=self.total_nimg, initial=min(self.cur_nimg, self.total_nimg), unit="img",
                             unit_scale=True, dynamic_ncols=True, file=sys.stderr, smoothing=0.1,
                             desc="train" if minutes is None else f"train (stops after {minutes:g} min)")
        except Exception:  # noqa: BLE001
            self.pbar = None

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        self._open_progress_bar()
        self.t_start = self.t_tick = time.time()
        self.tick_start_nimg = self.cur_nimg
        self.next_tick = (self.cur_nimg // self.tick_nimg + 1) * self.tick_nimg
        next_snap = (self.cur_nimg // self.snap_nimg + 1) * self.snap_nimg
        status, self.budget_hit = "done", False
        self.last_record: Dict[str, Any] = {}
        last_snap: Dict[str, Path] = {}

        done = self._finished()
        while not done:
            self.iteration_step(self._next_images())
            self.ema_step()
            data_trouble = self.data_monitor.check()
            stop_now, data_bad = dd.any_flags([self.stop.requested, data_trouble is not None], self.world, self.device)
            if data_bad:
                self._stop_for_data(data_trouble)
            done = self._finished()
            if self.cur_nimg >= self.next_tick or done or stop_now:
                done = self.tick(done)
            if stop_now:
                status = "interrupted"
                if self.dist.is_main:
                    last_snap = self.must_save(f"stopped by signal {self.stop.signum}")
                break
            if self.cur_nimg >= next_snap or done:
                last_snap = self.snapshot()
                next_snap = (self.cur_nimg // self.snap_nimg + 1) * self.snap_nimg

        if self.pbar is not None:
            self.pbar.close()
        if done and self.dist.is_main and "checkpoint" not in last_snap:
            # the final snapshot failed (or there was nothing to do): the end state must reach the disk
            last_snap = {**last_snap, **self.must_save("training finished")}
        if self.logger is not None:
            self.logger.close()
        if self.tb is not None:
            self.tb.close()
        return {"status": status, "budget_hit": self.budget_hit, "signal": self.stop.signum, "cur_nimg": self.cur_nimg,
                "iteration": self.iteration, "run_dir": str(self.run_dir), "last_record": self.last_record,
                "snapshot": {k: str(v) for k, v in last_snap.items()}, "nan_events": self.nan_events,
                "dist": self.dist, "seconds": time.time() - self.t_start, "snapshot_errors": self.snapshot_errors,
                "tensorboard_error": self.tb.error if self.tb is not None else None}


def _image_of(item):
    """Dataset items are uint8 images ``[3,R,R]``, or ``(image, mask)`` tuples: take the image."""
    if isinstance(item, (tuple, list)):
        return item[0]
    return item
