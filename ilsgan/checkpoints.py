"""Training checkpoints: atomic save, exact resume, and :func:`load_generator` for evaluation.

Format (a ``torch.save`` dict, readable with ``torch.load(path, weights_only=True)``)::

    {
      "format": "ilsgan-checkpoint", "version": 2,
      "config":   dict   # TrainConfig.to_dict(): {"preset": str, "network": {...}, "optim": {...}, ...}
                         # (ilsgan.config) -> rebuilds the networks
      "G", "D", "G_ema": state_dicts (float32, CPU tensors)
      "G_opt", "D_opt":  Adam state_dicts (or absent in a generator-only export)
      "augment":  AdaptiveAugment.state_dict() (or None when augmentation is off)
      "rng":      {"torch": ByteTensor, "cuda": [ByteTensor per device] | None,
                   "numpy": {...}, "python": tuple, "data": int}
      "counters": {"cur_nimg", "iteration", "nan_skips", "snapshot", ...}
      "meta":     {"time": float, "ilsgan_version": str, "world_size": int, ...}
    }

Saving writes ``PATH.tmp-<pid>``, syncs it to disk, then ``os.replace`` s it onto ``PATH``: a full
disk, an unwritable folder or a kill in the middle leaves the previous ``PATH`` whole.

:func:`load_checkpoint` returns the config as a :class:`~ilsgan.config.TrainConfig`. Version-1
checkpoints (a flat dict of preset keys, some under earlier names) are read by mapping those names
(:func:`config_from_v1`); one whose config cannot be mapped fails with a message that says so.

Loading never runs code from the file: every reader here uses ``torch.load(weights_only=True)``, which
builds only tensors and plain containers and refuses any other Python global. A whole pickled module
(``torch.save(G, path)``) can only be read by :func:`load_pickled_module` with ``trusted=True``.

Snapshots of a run: ``checkpoint-latest.pt`` plus numbered (:func:`copy_snapshot`)
``checkpoint-KKKKKK.III.pt`` (:func:`snapshot_tag`: whole kimg, then the remaining images, so names
are unique and sort by training progress; the older ``checkpoint-KKKKKK.pt`` names are still read).
``find_latest(outdir)`` resolves ``--resume latest``: ``outdir/checkpoint-latest.pt`` if present,
else the newest ``checkpoint-*.pt`` under ``outdir`` (searched recursively one level);
:func:`load_latest` falls back to the next newest when that one is unreadable.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from .config import DEFAULT_KEEP, PRESETS, ConfigError, SessionConfig, TrainConfig

__all__ = ["save_checkpoint", "load_checkpoint", "load_generator", "find_latest", "capture_rng", "restore_rng",
           "check_config_compatible", "CheckpointError", "FORMAT", "VERSION", "config_from_v1", "load_latest",
           "list_checkpoints", "load_pickled_module", "snapshot_tag", "snapshot_nimg", "copy_snapshot",
           "prune_snapshots", "UNTRUSTED_HINT"]

FORMAT = "ilsgan-checkpoint"
VERSION = 2  # 1: the config was a flat dict of preset keys (read through config_from_v1)

UNTRUSTED_HINT = ("loading a whole pickled object runs whatever code the file contains; pass "
                  "--trust-pickle (trusted=True) only for a file from a source you trust")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, not an ilsgan checkpoint, or from another config."""


# ------------------------------------------------------------------------------------------------
# RNG state

def capture_rng() -> Dict[str, Any]:
    """The state of every RNG the loop uses: torch (CPU), CUDA (all devices), numpy, python."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None,
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }


def restore_rng(state: Optional[Dict[str, Any]]) -> None:
    """Restore :func:`capture_rng` output (missing parts are left alone)."""
    if not state:
        return
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = list(state["cuda"])[:torch.cuda.device_count()]
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s.cpu(), i)
    if state.get("numpy") is not None:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))
    if state.get("python") is not None:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))


# ------------------------------------------------------------------------------------------------
# Save / load

def _cpu_state(module_or_state) -> Dict[str, torch.Tensor]:
    sd = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    return {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in sd.items()}


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def _plain(obj):
    """Config values as plain python (tuples/lists/dicts of str/int/float/bool/None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, str):
        return str(obj)  # also turns str subclasses (TorchVersion) into plain str
    return obj


class _ErrorKeepingWriter:
    """The file torch.save writes to, keeping the first ``OSError`` of a write: torch's zip writer
    replaces it by a RuntimeError ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b):
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        self.f.flush()


def save_checkpoint(path: Union[str, os.PathLike], *, config: TrainConfig, G, D, G_ema, G_opt=None, D_opt=None,
                    augment: Optional[Dict[str, Any]] = None, rng: Optional[Dict[str, Any]] = None,
                    counters: Optional[Dict[str, Any]] = None, meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write a checkpoint atomically (``PATH.tmp-<pid>`` + ``os.replace``). Returns the path.

    ``config`` is stored as :meth:`TrainConfig.to_dict`; ``G``/``D``/``G_ema`` are modules (unwrap DDP
    first) or state_dicts; ``G_opt``/``D_opt`` optimizers or their state_dicts; ``rng`` defaults to
    :func:`capture_rng`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"save_checkpoint: config must be a TrainConfig, got {type(config).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from . import __version__
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "G": _cpu_state(G),
        "D": _cpu_state(D),
        "G_ema": _cpu_state(G_ema),
        "G_opt": _to_cpu(G_opt.state_dict() if hasattr(G_opt, "state_dict") else G_opt),
        "D_opt": _to_cpu(D_opt.state_dict() if hasattr(D_opt, "state_dict") else D_opt),
        "augment": _to_cpu(augment),
        "rng": _to_cpu(rng if rng is not None else capture_rng()),
        "counters": _plain(dict(counters or {})),
        "meta": _plain({"time": time.time(), "ilsgan_version": __version__, "torch_version": str(torch.__version__),
                        **(meta or {})}),
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            w = _ErrorKeepingWriter(f)
            try:
                torch.save(ckpt, w)
            except Exception as e:  # noqa: BLE001
                if w.error is not None:  # report "ENOSPC: No space left on device", not torch's follow-up error
                    raise w.error from e
                raise
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it (power loss)
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # a failed write (ENOSPC, EACCES) must not leave a half file eating the disk
            try:
                tmp.unlink()
            except OSError:
                pass
    return path


def _weights_only_load(path: Path, map_location) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only; a file that needs any
    other Python global is refused (the global is named in the error) instead of executed."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _why_unreadable(e: BaseException) -> str:
    msg = str(e)
    # torch's weights-only unpickler names the global a pickle wanted to build or call; its own advice
    # (re-run with weights_only=False) is replaced by ours, which names the opt-in and its risk
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", msg)
    if m or "Weights only load failed" in msg:
        what = f" ({m.group(1)})" if m else ""
        return (f"it holds a pickled Python object{what}, not only tensors; it was not loaded "
                f"because {UNTRUSTED_HINT}")
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    return f"{type(e).__name__}: {first}"


def load_checkpoint(path: Union[str, os.PathLike], map_location="cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint dict (see the module docstring) with ``weights_only=True`` (no
    code from the file runs). A directory means its newest readable checkpoint (:func:`load_latest`).
    Raises :class:`CheckpointError`."""
    path = Path(path).expanduser()
    if path.is_dir():
        return load_latest(path, map_location=map_location)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = _weights_only_load(path, map_location)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is "unreadable"
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable ({_why_unreadable(e)})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an ilsgan checkpoint (no format={FORMAT!r} field)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {ckpt.get('version')}, newer than this "
                              f"ilsgan ({VERSION}); upgrade ilsgan")
    for k in ("config", "G", "D", "G_ema"):
        if k not in ckpt:
            raise CheckpointError(f"checkpoint {str(path)!r} lacks the {k!r} entry")
    try:
        if int(ckpt.get("version", 0)) < 2:
            ckpt["config"] = config_from_v1(ckpt["config"], ckpt.get("meta") or {})
        else:
            ckpt["config"] = TrainConfig.from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} (format version {ckpt.get('version')}) has a config this "
                              f"ilsgan cannot read ({e})") from e
    ckpt["path"] = str(path)
    return ckpt


# Version-1 checkpoints stored the config as one flat dict of preset keys; these had other names
# then ("name" held the preset's). The keys "style_mixing", "pl_weight" and "truncation_psi" were
# stored but never read.
_V1_NAMES = {"G_lr": "glr", "D_lr": "dlr", "gamma": "r1_gamma", "shift_max": "shift",
             "lambda_bin": "w_bin", "lambda_area": "w_area", "lambda_ils": "w_ils", "lambda_adv": "w_adv",
             "ils_distribution": "ils_dist", "ils_sigma_kimg": "ils_switch_kimg", "snap_kimg": "snap",
             "tick_kimg": "tick"}
_V1_UNREAD = ("style_mixing", "pl_weight", "truncation_psi")
# Settings added since version 1 whose preset value changes training, with the value that reproduces
# what a version-1 run did; a version-1 run resumes with these, not with today's preset.
_SINCE_V1 = {"w_div": 0.0}


def config_from_v1(flat: Dict[str, Any], meta: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The :class:`TrainConfig` of a version-1 checkpoint: its flat preset dict with the names
    mapped, missing keys from its named preset (else the paper's) except the settings added since
    (``_SINCE_V1``), which take the value that reproduces a version-1 run, and the data spec and seed
    from its ``meta``. Raises :class:`~ilsgan.config.ConfigError` for a key that maps to no setting."""
    if not isinstance(flat, dict):
        raise ConfigError(f"a version-1 config is a dict, got {type(flat).__name__}")
    settings: Dict[str, Any] = {}
    for k, v in flat.items():
        if k in _V1_UNREAD or k == "name":
            continue
        if k == "augment":  # the pipeline name, None = off
            settings["aug"] = "ada" if v else "noaug"
            if v:
                settings["aug_pipe"] = v
        elif k == "crop":
            settings["crop"] = v or "center"
        else:
            settings[_V1_NAMES.get(k, k)] = v
    settings = {**_SINCE_V1, **settings}
    meta = meta or {}
    if meta.get("data"):
        settings["data"] = str(meta["data"])
    if meta.get("seed") is not None:
        settings["seed"] = int(meta["seed"])
    name = flat.get("name")
    base = PRESETS.get(name, PRESETS["paper64"])
    base = dataclasses.replace(base, preset=str(name or base.preset), session=SessionConfig())
    try:
        return base.replace(**settings)
    except ConfigError as e:
        raise ConfigError(f"written by an earlier ilsgan, its settings could not be mapped: {e}") from None


# network settings that the weights do not depend on (the dtype the mixed-precision blocks compute in)
_WEIGHTLESS = ("precision",)


def check_config_compatible(saved: TrainConfig, wanted: TrainConfig, where: str = "checkpoint"
                            ) -> List[Tuple[str, Any, Any]]:
    """Compare two configs setting by setting. Raise :class:`CheckpointError` naming every network
    setting that differs (the weights would not fit); return ``(name, saved, wanted)`` of the other
    settings that differ (what a resume changes), the per-invocation ``session`` settings left out.
    ``precision`` is a network setting that leaves the weights as they are: it may differ."""
    network = saved.differences(wanted, sections=("network",))
    arch = [d for d in network if d[0] not in _WEIGHTLESS]
    if arch:
        raise CheckpointError(f"{where} was trained with another network config ("
                              + "; ".join(f"{k}: {where} has {a!r}, requested {b!r}" for k, a, b in arch)
                              + "). Resume with the same --preset/--resolution/overrides, "
                              "or start a new run in another --outdir.")
    return ([d for d in network if d[0] in _WEIGHTLESS]
            + saved.differences(wanted, sections=("optim", "loss", "augment", "data", "run")))


def load_generator(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu", which: str = "G_ema",
                   impl: str = "auto"):
    """Rebuild the layered generator stored in checkpoint ``path`` (a file, or a run directory: its
    latest checkpoint), load weights ``which`` (``"G_ema"``, default, or ``"G"``), move it to ``device``
    and return it in eval mode with ``requires_grad=False``. ``G.ilsgan_config`` holds the run's
    :class:`~ilsgan.config.TrainConfig` (its training data, seed, ...).
    Call ``G(z, return_layers=True)`` with ``z ~ N(0, 1)`` of shape ``[N, G.z_dim]``."""
    if which not in ("G_ema", "G"):
        raise ValueError(f"load_generator: which must be 'G_ema' or 'G', got {which!r}")
    ckpt = load_checkpoint(path)
    from .networks import build_networks
    cfg = ckpt["config"]
    G, _ = build_networks(cfg, impl=impl, device="cpu")
    try:
        G.load_state_dict(ckpt[which])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt['path']!r}: weights {which!r} do not match its config ({e})") from e
    G = G.to(device).eval().requires_grad_(False)
    G.ilsgan_config = cfg
    return G


def _is_latest(p: Path) -> bool:
    return p.name == "checkpoint-latest.pt"


def list_checkpoints(outdir: Union[str, os.PathLike]) -> List[Path]:
    """Every ``checkpoint-*.pt`` in ``outdir`` and its sub-directories (runs), newest first: the order
    ``--resume latest`` tries them in. ``outdir/checkpoint-latest.pt`` comes first; the others by
    modification time (a ``checkpoint-latest.pt`` before a numbered snapshot of the same time: its
    copy), then by training progress in the name."""
    outdir = Path(outdir).expanduser()
    if not outdir.is_dir():
        return []
    cands = [Path(c) for c in glob.glob(str(outdir / "checkpoint-*.pt")) + glob.glob(str(outdir / "*" / "checkpoint-*.pt"))
             if ".tmp-" not in c]

    def key(p: Path):
        try:
            mtime = os.path.getmtime(p)
        except OSError:  # vanished since the glob: try it last (it will be reported as missing)
            mtime = float("-inf")
        return (p == outdir / "checkpoint-latest.pt", mtime, _is_latest(p), snapshot_nimg(p) or -1, str(p))

    return sorted(cands, key=key, reverse=True)


def find_latest(outdir: Union[str, os.PathLike]) -> Optional[Path]:
    """The checkpoint ``--resume latest`` means for ``outdir``: ``checkpoint-latest.pt`` if present,
    else the most recently modified ``checkpoint-*.pt`` in ``outdir`` or its sub-directories (runs).
    It is not opened; :func:`load_latest` also skips unreadable files."""
    cands = list_checkpoints(outdir)
    return cands[0] if cands else None


def _warn_stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def load_latest(outdir: Union[str, os.PathLike], map_location="cpu",
                warn: Callable[[str], None] = _warn_stderr) -> Dict[str, Any]:
    """:func:`load_checkpoint` of the newest *readable* checkpoint under ``outdir`` (the order of
    :func:`list_checkpoints`). A truncated or corrupt newer file (a crash while the disk was full, a
    partial copy) is skipped with a ``warn`` naming it and why, so a resume loses one snapshot interval
    instead of failing. ``ckpt["skipped"]`` lists the skipped paths. Raises :class:`CheckpointError` when
    there is no checkpoint or none is readable."""
    outdir = Path(outdir).expanduser()
    cands = list_checkpoints(outdir)
    if not cands:
        raise CheckpointError(f"no checkpoint-*.pt found under {str(outdir)!r}")
    skipped: List[Tuple[Path, str]] = []
    for p in cands:
        try:
            ckpt = load_checkpoint(p, map_location=map_location)
        except CheckpointError as e:
            skipped.append((p, str(e)))
            warn(f"skipping {e}")
            continue
        if skipped:
            warn(f"using {str(p)!r} instead of the newer unreadable "
                 + ", ".join(repr(str(q)) for q, _ in skipped))
        ckpt["skipped"] = [str(q) for q, _ in skipped]
        return ckpt
    raise CheckpointError(f"none of the {len(cands)} checkpoint(s) under {str(outdir)!r} is readable: "
                          + "; ".join(why for _, why in skipped))


def load_pickled_module(path: Union[str, os.PathLike], map_location="cpu", *, trusted: bool = False):
    """A whole pickled object (``torch.save(module, path)``), read with ``weights_only=False``.

    Unpickling runs any code the file names, so it is done only with ``trusted=True`` (the CLIs'
    ``--trust-pickle``); otherwise :class:`CheckpointError`, before the file is opened."""
    path = Path(path).expanduser()
    if not trusted:
        raise CheckpointError(f"{str(path)!r}: refusing to unpickle a whole object: {UNTRUSTED_HINT}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{str(path)!r} is unreadable ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------------------
# Numbered snapshots and retention

_SNAPSHOT_RE = re.compile(r"^checkpoint-(\d{6,})(?:\.(\d{3}))?\.pt$")


def snapshot_tag(nimg: int) -> str:
    """``KKKKKK.III`` for ``nimg`` images: whole kimg (6 digits), a dot, the remaining images (3
    digits). ``000000.400`` = 0.4 kimg. Unique per image count (the older ``KKKKKK`` names gave every
    snapshot within one kimg the same name) and of fixed width, so names sort in training order."""
    nimg = int(nimg)
    if nimg < 0:
        raise ValueError(f"snapshot_tag: nimg must be >= 0, got {nimg}")
    return f"{nimg // 1000:06d}.{nimg % 1000:03d}"


def snapshot_nimg(path: Union[str, os.PathLike]) -> Optional[int]:
    """Images shown at a numbered snapshot, from its name (``checkpoint-KKKKKK.III.pt``, or the older
    ``checkpoint-KKKKKK.pt`` = KKKKKK kimg rounded down); None for any other name."""
    m = _SNAPSHOT_RE.match(Path(path).name)
    if m is None:
        return None
    return int(m.group(1)) * 1000 + int(m.group(2) or 0)


def prune_snapshots(run_dir: Union[str, os.PathLike], keep: Optional[int],
                    warn: Callable[[str], None] = _warn_stderr) -> List[Path]:
    """Delete all but the ``keep`` newest numbered snapshots in ``run_dir`` (not its sub-directories;
    ``checkpoint-latest.pt`` and any other file are never touched; ``keep=None`` keeps all). Newest =
    most recently written (a run resumed from an older snapshot ranks its new snapshots above the
    abandoned later ones), then the larger image count. Returns the deleted paths."""
    if keep is None:
        return []
    if int(keep) < 0:
        raise ValueError(f"keep must be >= 0 or None (all), got {keep!r}")
    run_dir = Path(run_dir)
    snaps = []
    for p in run_dir.glob("checkpoint-*.pt"):
        n = snapshot_nimg(p)
        if n is None:
            continue
        try:
            snaps.append((os.path.getmtime(p), n, p))
        except OSError:
            continue
    snaps.sort(reverse=True)
    removed = []
    for _, _, p in snaps[int(keep):]:
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            warn(f"could not delete old snapshot {str(p)!r} (--keep {keep}): {e.strerror or e}")
    return removed


def copy_snapshot(latest: Union[str, os.PathLike], nimg: int, keep: Optional[int] = DEFAULT_KEEP,
                  warn: Callable[[str], None] = _warn_stderr) -> Path:
    """Copy the just-written ``latest`` checkpoint to the numbered snapshot
    ``checkpoint-<snapshot_tag(nimg)>.pt`` beside it (through a temporary name), then
    :func:`prune_snapshots` to ``keep``. Returns the numbered path.

    A real copy, not a hard link: an in-place corruption of ``checkpoint-latest.pt`` (a truncating
    copy tool, a disk error) must not take the newest numbered snapshot with it, which is what
    ``--resume latest`` falls back to. Raises ``OSError`` (disk full, folder unwritable) with every
    earlier file intact; nothing is pruned unless the new snapshot exists."""
    latest = Path(latest)
    dst = latest.with_name(f"checkpoint-{snapshot_tag(nimg)}.pt")
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(latest, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    prune_snapshots(latest.parent, keep, warn=warn)
    return dst
