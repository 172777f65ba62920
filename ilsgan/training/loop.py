"""The ILSGAN training loop (ILSGAN.md §6): G main / D main / lazy D reg phases, Adam with the
lazy-regularization correction, G_ema, adaptive augmentation, NaN/Inf gradient guard, ticks (JSONL
log, progress bar), snapshots (grids, plot, checkpoints), exact resume and clean stop on a signal.

Faults (:mod:`ilsgan.training.faults`): a snapshot that cannot be written (disk full, folder made
unwritable) is reported and training *goes on*: the previous checkpoints stay intact (every file is
written beside them and renamed into place), the next snapshot tries again, and stopping would throw
away for certain the progress made since the last good snapshot, while space is often freed meanwhile.
Only when the final or the on-signal checkpoint fails does the run end with an error (:class:`RunAborted`)
naming the newest checkpoint that is on disk. Image files that break under the run are skipped and
logged (``Data/skipped``) until more than ``max_data_failures`` of the reads fail; a lost peer process
ends every other one within ``dist_timeout`` seconds.

Entry point: :func:`training_loop` (the CLI ``python -m ilsgan.train`` builds its arguments).
"""

from __future__ import annotations

import copy
import errno
import functools
import math
import os
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import torch

from .. import checkpoints as ck
from ..losses.gan import ILSGANLoss, LossWeights
from . import distributed as dd
from .ema import ema_beta, update_ema
from .faults import DEFAULT_MAX_DATA_FAILURES, DataFailureMonitor, PeerLost, RunAborted, is_comm_failure
from .snapshot import fixed_latents, save_image_grid, save_layer_grid
from .stats import JsonlLogger, StatsCollector, TensorBoardWriter, collapse_warning, plot_log

__all__ = ["training_loop", "InfiniteSampler", "lazy_adam_params", "loss_weights_from_config", "StopRequest",
           "RunAborted"]


class StopRequest:
    """Set by a signal handler; the loop saves a checkpoint and returns at the next iteration boundary."""

    def __init__(self):
        self.signum: Optional[int] = None

    def __call__(self, signum, frame=None):
        if self.signum is not None:  # second signal: give up waiting
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


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


def loss_weights_from_config(cfg: Dict[str, Any]) -> LossWeights:
    from ..networks import r1_gamma
    return LossWeights(
        r1_gamma=r1_gamma(cfg, cfg["resolution"], cfg["batch"]),
        D_reg_interval=cfg.get("D_reg_interval"),
        w_adv=float(cfg.get("lambda_adv", 1.0)),
        w_bin=float(cfg["lambda_bin"]),
        w_area=float(cfg["lambda_area"]),
        area_min=float(cfg["area_min"]),
        area_mirror=cfg.get("area_mirror"),
        ils=bool(cfg["ils"]),
        w_ils=float(cfg.get("lambda_ils", 1.0)),
        ils_sigma=tuple(cfg["ils_sigma"]),
        ils_sigma_kimg=float(cfg["ils_sigma_kimg"]),
        ils_distribution=cfg["ils_distribution"],
        shift_max=float(cfg["shift_max"]),
        bin_ramp_kimg=float(cfg.get("bin_ramp_kimg") or 0.0),
    )


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


def _log(msg: str, dist_info: dd.DistInfo, log_fn: Callable[[str], None]) -> None:
    if dist_info.is_main:
        log_fn(msg)


def op_backends(device_type: str, impl: str) -> Dict[str, str]:
    """The backend each op runs on ``device_type`` tensors for ``impl`` (what a run records)."""
    from ..ops import backend_info
    return {op: d[device_type]["auto"] if impl == "auto" else impl for op, d in sorted(backend_info().items())}


def _os_error(e: OSError) -> str:
    """``ENOSPC: No space left on device`` style text of an OSError (its path is named by the caller)."""
    code = errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    return f"{code + ': ' if code else ''}{e.strerror or e}"


def _abort_on_lost_peer(fn):
    """Turn a failed or timed-out collective of a multi-process run into :class:`PeerLost` with one clear
    line (instead of a gloo traceback) and leave the process group without waiting for the lost peer."""

    @functools.wraps(fn)
    def wrapper(cfg, run_dir, *args, **kwargs):
        try:
            return fn(cfg, run_dir, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - only collective failures are translated
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world <= 1 or not is_comm_failure(e):
                raise
            dd.abort()
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's "[/path/to/pair.cc:553] " source prefix
            raise PeerLost(
                f"process {os.environ.get('RANK', '?')} of {world} lost contact with the others ({first}); another "
                f"process died or hung, so this one stops too. The checkpoints in {str(run_dir)!r} are intact: "
                f"continue with --resume latest") from e
    return wrapper


@_abort_on_lost_peer
def training_loop(
    cfg: Dict[str, Any],
    run_dir: str | os.PathLike,
    data: str = "synthetic:medium",
    device: str = "cpu",
    impl: str = "auto",
    seed: int = 0,
    resume: Optional[str | os.PathLike] = None,
    workers: int = 0,
    max_iters: Optional[int] = None,
    minutes: Optional[float] = None,
    progress: bool = True,
    tensorboard: bool = True,
    nan_guard: str = "replace",
    stop: Optional[StopRequest] = None,
    dataset=None,
    log_fn: Callable[[str], None] = print,
    grid_samples: int = 24,
    keep: Optional[int] = ck.DEFAULT_KEEP,
    dist_timeout: float = dd.DEFAULT_TIMEOUT_S,
    max_data_failures: float = DEFAULT_MAX_DATA_FAILURES,
) -> Dict[str, Any]:
    """Train ILSGAN with config ``cfg`` (a full preset dict, see :mod:`ilsgan.networks.presets`; keys
    used here besides the network ones: ``batch, kimg, snap_kimg, tick_kimg, G_lr, D_lr, betas, eps,
    D_reg_interval, G_reg_interval, ema_kimg, ema_rampup, augment, aug_p, ada_target, ada_interval,
    ada_kimg`` and the loss keys of :func:`loss_weights_from_config`).

    Writes into ``run_dir``: ``config.json``, ``log.jsonl``, ``reals.png``, ``grid-KKKKKK.III.png``,
    ``plot.png``, ``checkpoint-KKKKKK.III.pt`` and ``checkpoint-latest.pt`` (KKKKKK.III = kimg with the
    images, :func:`ilsgan.checkpoints.snapshot_tag`); only the ``keep`` newest numbered checkpoints are
    kept (None: all). Stops after ``cfg["kimg"]`` kimg, after ``max_iters`` iterations in total, at the
    first tick after ``minutes`` minutes of training in this call (a wall-clock budget: the run then ends
    as "done", with a full snapshot), or when ``stop`` is requested (a checkpoint is saved in every case). Returns a summary dict
    (``status`` "done"/"interrupted", ``cur_nimg``, ``iteration``, paths, last record,
    ``snapshot_errors``).

    Raises :class:`RunAborted` when the run cannot go on: the final / on-signal checkpoint cannot be
    written, more than ``max_data_failures`` of the image reads of a window fail (the progress is saved
    to ``checkpoint-latest.pt`` first), or a peer process is lost (:class:`~ilsgan.training.faults.PeerLost`;
    ``dist_timeout`` seconds bound every collective). See the module docstring.
    """
    from ..augment import AdaptiveAugment, AugmentPipe
    from ..data import DatasetError as DatasetErrorType, open_dataset
    from ..networks import build_networks, ema_kimg as cfg_ema_kimg

    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes (--minutes) must be > 0, got {minutes!r}")
    if nan_guard not in ("replace", "skip"):
        raise ValueError(f"nan_guard must be 'replace' or 'skip', got {nan_guard!r}")
    run_dir = Path(run_dir)
    device = torch.device(device)
    dist_info = dd.init_from_env(str(device), timeout_s=dist_timeout)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    world, rank = dist_info.world_size, dist_info.rank
    batch = int(cfg["batch"])
    if batch % world != 0:
        raise ValueError(f"--batch {batch} is not divisible by the number of processes {world}")
    batch_gpu = batch // world
    res = int(cfg["resolution"])
    stop = stop or StopRequest()

    # ---- resume: read the checkpoint first (its config decides the networks) ----
    ckpt = None
    if resume is not None:
        ckpt = ck.load_checkpoint(resume)
        ck.check_config_compatible(ckpt["config"], cfg, where=f"checkpoint {ckpt['path']!r}")

    # ---- seeds (identical initial weights on every rank; per-rank streams afterwards) ----
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # ---- data ----
    if dataset is None:
        dataset = open_dataset(data, res, split="train", seed=seed, crop=cfg.get("crop", "center"))
    if len(dataset) == 0:
        from ..data import DatasetError
        raise DatasetError(f"dataset {data!r} is empty")
    if getattr(dataset, "num_skipped", 0):
        _log(f"warning: {dataset.num_skipped} unreadable image(s) skipped in {data!r}", dist_info, log_fn)
    data_monitor = DataFailureMonitor(getattr(dataset, "read_counter", None), max_fraction=max_data_failures,
                                      what=repr(str(data)))

    # ---- networks, augmentation, optimizers ----
    G, D = build_networks(cfg, resolution=res, impl=impl, device=device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    dd.broadcast_module(G)
    dd.broadcast_module(D)
    dd.broadcast_module(G_ema)
    augment_pipe, ada = None, None
    if cfg.get("augment"):
        augment_pipe = AugmentPipe(cfg["augment"], p=float(cfg.get("aug_p", 0.0)), impl=impl).to(device)
        augment_pipe.train().requires_grad_(False)
        if cfg.get("ada_target") is not None:
            ada = AdaptiveAugment(augment_pipe, target=float(cfg["ada_target"]),
                                  interval=int(cfg.get("ada_interval", 4)), speed_kimg=float(cfg["ada_kimg"]))
    G_lr, G_betas = lazy_adam_params(cfg["G_lr"], cfg["betas"], cfg.get("G_reg_interval"))
    D_lr, D_betas = lazy_adam_params(cfg["D_lr"], cfg["betas"], cfg.get("D_reg_interval"))
    G_opt = torch.optim.Adam(G.parameters(), lr=G_lr, betas=G_betas, eps=float(cfg["eps"]))
    D_opt = torch.optim.Adam(D.parameters(), lr=D_lr, betas=D_betas, eps=float(cfg["eps"]))
    weights = loss_weights_from_config(cfg)
    loss = ILSGANLoss(G, D, augment_pipe, weights, impl=impl, ada_stats=ada.accumulate if ada else None)

    cur_nimg, iteration, nan_events = 0, 0, {"G": 0, "D": 0}
    if ckpt is not None:
        try:
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
            G_ema.load_state_dict(ckpt["G_ema"])
        except RuntimeError as e:
            raise ck.CheckpointError(f"checkpoint {ckpt['path']!r} does not match the networks of this config: "
                                     f"{e}") from e
        if ckpt.get("G_opt"):
            G_opt.load_state_dict(ckpt["G_opt"])
        if ckpt.get("D_opt"):
            D_opt.load_state_dict(ckpt["D_opt"])
        if ada is not None and ckpt.get("augment"):
            ada.load_state_dict(ckpt["augment"])
        elif augment_pipe is not None and ckpt.get("augment") and "p" in ckpt["augment"]:
            augment_pipe.p.fill_(float(ckpt["augment"]["p"]))
        c = ckpt.get("counters", {})
        cur_nimg = int(c.get("cur_nimg", 0))
        iteration = int(c.get("iteration", 0))
        nan_events = dict(c.get("nan_events", nan_events))
        if rank == 0:
            ck.restore_rng(ckpt.get("rng"))
        else:
            torch.manual_seed(seed + 1000003 * rank + cur_nimg)
        _log(f"resumed from {ckpt['path']} at {cur_nimg / 1000:.3f} kimg (iteration {iteration})", dist_info,
             log_fn)
    elif world > 1:
        torch.manual_seed(seed + 1000003 * rank)
    G.train().requires_grad_(False)
    D.train().requires_grad_(False)

    sampler = InfiniteSampler(len(dataset), rank, world, seed=seed, start=cur_nimg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_gpu, sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0, prefetch_factor=2 if workers else None,
                                         generator=torch.Generator().manual_seed(seed))
    data_iter = iter(loader)

    # ---- outputs (rank 0) ----
    total_nimg = int(round(float(cfg["kimg"]) * 1000))
    snap_nimg = max(1, int(round(float(cfg["snap_kimg"]) * 1000)))
    tick_kimg = cfg.get("tick_kimg")
    if tick_kimg is None:
        tick_kimg = min(4.0, float(cfg["snap_kimg"]) / 8)
    tick_nimg = max(1, int(round(float(tick_kimg) * 1000)))
    logger = tb = None
    grid_z = fixed_latents(grid_samples, G.z_dim, seed)
    if dist_info.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            import json
            with open(run_dir / "config.json", "w") as f:
                json.dump({"config": ck._plain(cfg), "data": str(data), "device": str(device), "impl": impl,
                           "op_backends": op_backends(device.type, impl),
                           "seed": seed, "world_size": world, "resumed_from": ckpt["path"] if ckpt else None},
                          f, indent=2)
            logger = JsonlLogger(run_dir / "log.jsonl")
            tb = TensorBoardWriter(run_dir / "tensorboard", enabled=tensorboard)
            if not (run_dir / "reals.png").exists():
                n = min(grid_samples, len(dataset))
                reals = torch.stack([_image_of(dataset[i]) for i in range(n)])
                save_image_grid(reals, run_dir / "reals.png", cols=12)
        except OSError as e:  # nothing trained yet: stopping loses nothing
            raise RunAborted(f"cannot write the run directory {str(run_dir)!r} ({_os_error(e)}: "
                             f"{getattr(e, 'filename', None) or run_dir})") from e

    snapshot_errors: list = []
    saved_ok: Dict[str, Any] = {"path": ckpt["path"] if ckpt else None, "nimg": cur_nimg if ckpt else None}
    warned: set = set()

    def warn_once(kind: str, msg: str) -> None:
        if kind not in warned:  # a full disk fails every write: one line per kind, not one per tick
            warned.add(kind)
            (pbar.write(msg) if pbar is not None else log_fn(msg))

    def save(numbered: bool) -> Optional[Path]:
        """Checkpoint-latest (and the numbered snapshot); None when it could not be written."""
        state = dict(config=cfg, G=G, D=D, G_ema=G_ema, G_opt=G_opt, D_opt=D_opt,
                     augment=ada.state_dict() if ada else ({"p": float(augment_pipe.p)} if augment_pipe else None),
                     rng=ck.capture_rng(),
                     counters={"cur_nimg": cur_nimg, "iteration": iteration, "nan_events": nan_events},
                     meta={"world_size": world, "data": str(data), "seed": seed, "impl": impl})
        try:
            latest = ck.save_checkpoint(run_dir / "checkpoint-latest.pt", **state)
            saved_ok.update(path=str(latest), nimg=cur_nimg)
            return ck.copy_snapshot(latest, cur_nimg, keep=keep, warn=log_fn) if numbered else latest
        except OSError as e:
            where = str(getattr(e, "filename", None) or run_dir).split(".tmp-")[0]  # the file meant, not its temp
            kept = (f"the newest checkpoint on disk, {saved_ok['path']} ({saved_ok['nimg'] / 1000:.3f} kimg), is "
                    f"intact" if saved_ok["path"] else "no earlier checkpoint of this run exists")
            msg = (f"error: could not write the checkpoint at {cur_nimg / 1000:.3f} kimg ({_os_error(e)}: {where}); "
                   f"{kept}" + ("; training goes on and tries again at the next snapshot" if numbered else ""))
            snapshot_errors.append({"kimg": cur_nimg / 1000, "error": _os_error(e), "path": str(where)})
            (pbar.write(msg) if pbar is not None else log_fn(msg))
            return None

    def snapshot(final: bool) -> Dict[str, Path]:
        out = {}
        if not dist_info.is_main:
            return out
        tag = ck.snapshot_tag(cur_nimg)
        saved = save(numbered=True)
        if saved is not None:
            out["checkpoint"] = saved
        try:
            out["grid"] = save_layer_grid(G_ema, grid_z, run_dir / f"grid-{tag}.png", cols=12, device=device)
        except OSError as e:
            warn_once("grid", f"warning: could not write grid-{tag}.png ({_os_error(e)}); training goes on")
        try:
            p = plot_log(run_dir / "log.jsonl", run_dir / "plot.png")
            if p:
                out["plot"] = p
        except Exception as e:  # noqa: BLE001 - a plotting problem must not kill training
            log_fn(f"warning: could not draw plot.png ({type(e).__name__}: {e})")
        return out

    def must_save(why: str) -> Dict[str, Path]:
        """The checkpoint at the end of the run or on a signal: if it cannot be written the progress
        since the last snapshot is lost, so the run ends with an error that says what is on disk."""
        saved = save(numbered=False)
        if saved is None:
            kept = (f"the newest checkpoint on disk is {saved_ok['path']} ({saved_ok['nimg'] / 1000:.3f} kimg)"
                    if saved_ok["path"] else "no checkpoint of this run is on disk")
            err = snapshot_errors[-1]
            if dist_info.enabled:
                dd.cleanup()  # the other ranks are already waiting in the end-of-run barrier
            raise RunAborted(f"{why} at {cur_nimg / 1000:.3f} kimg, but its checkpoint could not be written "
                             f"({err['error']}: {err['path']}); {kept}")
        return {"checkpoint": saved}

    # ---- main loop ----
    collector = StatsCollector()
    pbar = None
    if progress and dist_info.is_main:
        try:
            from tqdm.auto import tqdm
            pbar = tqdm(total=total_nimg, initial=min(cur_nimg, total_nimg), unit="img", unit_scale=True,
                        dynamic_ncols=True, file=sys.stderr, smoothing=0.1,
                        desc="train" if minutes is None else f"train (stops after {minutes:g} min)")
        except Exception:  # noqa: BLE001
            pbar = None
    start_nimg = cur_nimg
    t_start = t_tick = time.time()
    tick_start_nimg = cur_nimg
    next_tick = (cur_nimg // tick_nimg + 1) * tick_nimg
    next_snap = (cur_nimg // snap_nimg + 1) * snap_nimg
    status = "done"
    budget_hit = False
    last_record: Dict[str, Any] = {}
    last_snap: Dict[str, Path] = {}
    reg_k = int(cfg.get("D_reg_interval") or 0)

    done = cur_nimg >= total_nimg or (max_iters is not None and iteration >= max_iters)
    while not done:
        try:
            images = next(data_iter)
        except DatasetErrorType as e:
            raise RunAborted(f"--data: {e}") from e
        images = _image_of(images).to(device, non_blocking=True).to(torch.float32) / 127.5 - 1

        phases = [("Gmain", G, G_opt, 1)]
        if reg_k:
            phases.append(("Dmain", D, D_opt, 1))
            if iteration % reg_k == 0:
                phases.append(("Dreg", D, D_opt, reg_k))
        else:
            phases.append(("Dboth", D, D_opt, 1))
        for name, module, opt, gain in phases:
            gen_z = torch.randn([batch_gpu, G.z_dim], device=device)
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            stats = loss.accumulate_gradients(name, images, gen_z, gain=gain, cur_nimg=cur_nimg)
            module.requires_grad_(False)
            params = list(module.parameters())
            dd.sync_grads(params, world) if world > 1 else None
            bad = _guard_grads(params, nan_guard)
            key = "G" if name == "Gmain" else "D"
            if bad:
                nan_events[key] += 1
                stats[f"Guard/nonfinite_{key}"] = torch.tensor(1.0)
            if not (bad and nan_guard == "skip"):
                opt.step()
            collector.add(stats)

        # G_ema, counters, augmentation
        update_ema(G_ema, G, ema_beta(cur_nimg, batch, cfg_ema_kimg(cfg, batch), cfg.get("ema_rampup")))
        cur_nimg += batch
        iteration += 1
        if ada is not None:
            ada.step(batch)
        if pbar is not None:
            pbar.update(min(batch, max(0, total_nimg - pbar.n)))

        data_trouble = data_monitor.check()
        stop_now, data_bad = dd.any_flags([stop.requested, data_trouble is not None], world, device)
        if data_bad:
            # the weights are consistent at this iteration boundary: save them, then stop
            if dist_info.is_main:
                must_save("stopped because the training images fail to load")
            if dist_info.enabled:
                dd.cleanup()
            raise RunAborted(f"--data: {data_trouble or 'another process found too many unreadable images'}; "
                             f"progress saved to {run_dir / 'checkpoint-latest.pt'}: fix the data, then "
                             f"continue with --resume latest")
        done = cur_nimg >= total_nimg or (max_iters is not None and iteration >= max_iters)
        if cur_nimg >= next_tick or done or stop_now:
            rec = collector.reduce(world)
            now = time.time()
            if minutes is not None and not done:
                # every rank must agree, or one would wait for the others in the next collective
                over = now - t_start >= minutes * 60
                done = dd.any_flag(over, world, device) if world > 1 else over
                budget_hit = done
            dt, dn = now - t_tick, cur_nimg - tick_start_nimg
            rec = {"Progress/kimg": cur_nimg / 1000, "Progress/iteration": iteration,
                   "Progress/augment_p": float(augment_pipe.p) if augment_pipe is not None else 0.0,
                   "Progress/ada_rt": (ada.rt if ada is not None and ada.rt is not None else None),
                   "Timing/sec_per_kimg": dt / max(dn, 1) * 1000, "Timing/kimg_per_sec": dn / 1000 / max(dt, 1e-9),
                   "Timing/sec_per_iter": dt / max(dn / batch, 1e-9), "Timing/total_sec": now - t_start,
                   "Guard/nan_events_G": nan_events["G"], "Guard/nan_events_D": nan_events["D"],
                   **rec, "Progress/time": now}
            if data_monitor.counter is not None:
                skipped = torch.tensor([float(data_monitor.totals()[1])], device=device)
                rec["Data/skipped"] = int(dd.all_reduce_mean(skipped, world).item() * world)
            if snapshot_errors:
                rec["Snapshot/failed"] = len(snapshot_errors)
            warn = collapse_warning(rec)
            if warn:
                rec["warning"] = warn
            if dist_info.is_main:
                try:
                    logger.write(rec)
                    tb.write(rec, cur_nimg / 1000)
                except OSError as e:  # a full disk must not end the run; the checkpoints report it too
                    warn_once("log", f"warning: could not write log.jsonl / TensorBoard ({_os_error(e)}); "
                                     f"training goes on")
                if warn:
                    msg = f"warning at {cur_nimg / 1000:.2f} kimg: {warn}"
                    (pbar.write(msg) if pbar is not None else log_fn(msg))
                summary = (f"G {rec.get('Loss/G/adv', float('nan')):.3f} "
                           f"D {rec.get('Loss/D/real', float('nan')) + rec.get('Loss/D/fake', float('nan')):.3f} "
                           f"area {rec.get('Mask/area', float('nan')):.2f} p {rec['Progress/augment_p']:.3f} "
                           f"{rec['Timing/sec_per_kimg']:.1f}s/kimg")
                if pbar is not None:
                    pbar.set_postfix_str(summary, refresh=False)
                else:  # no bar (--no-progress, logs to a file): one line per tick, with an ETA
                    eta = (total_nimg - cur_nimg) / 1000 * rec["Timing/sec_per_kimg"]
                    if minutes is not None:
                        eta = min(eta, max(0.0, minutes * 60 - (now - t_start)))
                    log_fn(f"kimg {cur_nimg / 1000:.2f}/{total_nimg / 1000:g}  {summary}  ETA {eta / 60:.1f} min")
            last_record = rec
            t_tick, tick_start_nimg = now, cur_nimg
            next_tick = (cur_nimg // tick_nimg + 1) * tick_nimg

        if stop_now:
            status = "interrupted"
            if dist_info.is_main:
                last_snap = must_save(f"stopped by signal {stop.signum}")
            break
        if cur_nimg >= next_snap or done:
            last_snap = snapshot(final=done)
            next_snap = (cur_nimg // snap_nimg + 1) * snap_nimg

    if pbar is not None:
        pbar.close()
    if done and dist_info.is_main and "checkpoint" not in last_snap:
        # the final snapshot failed (or there was nothing to do): the end state must reach the disk
        last_snap = {**last_snap, **must_save("training finished")}
    if logger is not None:
        logger.close()
    if tb is not None:
        tb.close()
    return {"status": status, "budget_hit": budget_hit, "signal": stop.signum, "cur_nimg": cur_nimg, "iteration": iteration,
            "run_dir": str(run_dir), "last_record": last_record, "snapshot": {k: str(v) for k, v in last_snap.items()},
            "nan_events": nan_events, "dist": dist_info, "seconds": time.time() - t_start,
            "snapshot_errors": snapshot_errors,
            "tensorboard_error": tb.error if tb is not None else None}


def _image_of(item):
    """Dataset items are uint8 images ``[3,R,R]``, or ``(image, mask)`` tuples: take the image."""
    if isinstance(item, (tuple, list)):
        return item[0]
    return item
