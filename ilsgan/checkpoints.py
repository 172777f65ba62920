"""Training checkpoints: atomic save, exact resume, and :func:`load_generator` for evaluation.

Format (a ``torch.save`` dict, readable with ``torch.load(path, weights_only=True)``)::

    {
      "format": "ilsgan-checkpoint", "version": 1,
      "config":   dict   # the full training config (preset keys of ilsgan.networks.presets, with
                         # "resolution", "batch" and every loss weight resolved) -> rebuilds the networks
      "G", "D", "G_ema": state_dicts (float32, CPU tensors)
      "G_opt", "D_opt":  Adam state_dicts (or absent in a generator-only export)
      "augment":  AdaptiveAugment.state_dict() (or None when augmentation is off)
      "rng":      {"torch": ByteTensor, "cuda": [ByteTensor per device] | None,
                   "numpy": {...}, "python": tuple, "data": int}
      "counters": {"cur_nimg", "iteration", "nan_skips", "snapshot", ...}
      "meta":     {"time": float, "ilsgan_version": str, "world_size": int, ...}
    }

Saving writes ``PATH.tmp-<pid>`` then ``os.replace`` s it onto ``PATH`` (never a half-written file).
``find_latest(outdir)`` resolves ``--resume latest``: ``outdir/checkpoint-latest.pt`` if present,
else the newest ``checkpoint-*.pt`` under ``outdir`` (searched recursively one level).
"""

from __future__ import annotations

import glob
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "load_generator", "find_latest", "capture_rng", "restore_rng",
           "check_config_compatible", "CheckpointError", "FORMAT", "VERSION", "ARCH_KEYS"]

FORMAT = "ilsgan-checkpoint"
VERSION = 1

# Config keys that define the network architecture (a resume with other values cannot load the weights).
ARCH_KEYS = ("resolution", "z_dim", "w_dim", "mapping_layers", "mapping_lr_multiplier", "channel_base",
             "channel_max", "num_fp16_res", "conv_clamp", "mbstd_group_size", "mbstd_num_channels", "use_noise",
             "w_avg_beta")


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


def save_checkpoint(path: Union[str, os.PathLike], *, config: Dict[str, Any], G, D, G_ema, G_opt=None, D_opt=None,
                    augment: Optional[Dict[str, Any]] = None, rng: Optional[Dict[str, Any]] = None,
                    counters: Optional[Dict[str, Any]] = None, meta: Optional[Dict[str, Any]] = None) -> Path:
    """Write a checkpoint atomically (``PATH.tmp-<pid>`` + ``os.replace``). Returns the path.

    ``G``/``D``/``G_ema`` are modules (unwrap DDP first) or state_dicts; ``G_opt``/``D_opt`` optimizers or
    their state_dicts; ``rng`` defaults to :func:`capture_rng`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from . import __version__
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "config": _plain(dict(config)),
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
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    return path


def load_checkpoint(path: Union[str, os.PathLike], map_location="cpu") -> Dict[str, Any]:
    """Read and validate a checkpoint dict (see the module docstring). Raises :class:`CheckpointError`."""
    path = Path(path).expanduser()
    if path.is_dir():
        latest = find_latest(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint-*.pt found in directory {str(path)!r}")
        path = latest
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is "unreadable"
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an ilsgan checkpoint (no format={FORMAT!r} field)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {ckpt.get('version')}, newer than this "
                              f"ilsgan ({VERSION}); upgrade ilsgan")
    for k in ("config", "G", "D", "G_ema"):
        if k not in ckpt:
            raise CheckpointError(f"checkpoint {str(path)!r} lacks the {k!r} entry")
    ckpt["path"] = str(path)
    return ckpt


def check_config_compatible(saved: Dict[str, Any], wanted: Dict[str, Any], where: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming each architecture key that differs between configs."""
    diffs = []
    for k in ARCH_KEYS:
        if k in saved and k in wanted and _plain(saved[k]) != _plain(wanted[k]):
            diffs.append(f"{k}: {where} has {saved[k]!r}, requested {wanted[k]!r}")
    if diffs:
        raise CheckpointError(f"{where} was trained with another network config ("
                              + "; ".join(diffs) + "). Resume with the same --preset/--resolution/overrides, "
                              "or start a new run in another --outdir.")


def load_generator(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu", which: str = "G_ema",
                   impl: str = "auto"):
    """Rebuild the layered generator stored in checkpoint ``path`` (a file, or a run directory: its
    latest checkpoint), load weights ``which`` (``"G_ema"``, default, or ``"G"``), move it to ``device``
    and return it in eval mode with ``requires_grad=False``. ``G.ilsgan_config`` holds the config,
    ``G.ilsgan_meta`` the run's metadata (``"data"``: the training data spec, ``"seed"``, ...).
    Call ``G(z, return_layers=True)`` with ``z ~ N(0, 1)`` of shape ``[N, G.z_dim]``."""
    if which not in ("G_ema", "G"):
        raise ValueError(f"load_generator: which must be 'G_ema' or 'G', got {which!r}")
    ckpt = load_checkpoint(path)
    from .networks import build_networks
    cfg = dict(ckpt["config"])
    G, _ = build_networks(cfg, resolution=cfg.get("resolution"), impl=impl, device="cpu")
    try:
        G.load_state_dict(ckpt[which])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt['path']!r}: weights {which!r} do not match its config ({e})") from e
    G = G.to(device).eval().requires_grad_(False)
    G.ilsgan_config = cfg
    G.ilsgan_meta = dict(ckpt.get("meta") or {})
    return G


def find_latest(outdir: Union[str, os.PathLike]) -> Optional[Path]:
    """The checkpoint ``--resume latest`` means for ``outdir``: ``checkpoint-latest.pt`` if present,
    else the most recently modified ``checkpoint-*.pt`` in ``outdir`` or its sub-directories (runs)."""
    outdir = Path(outdir).expanduser()
    if not outdir.is_dir():
        return None
    direct = outdir / "checkpoint-latest.pt"
    if direct.exists():
        return direct
    cands: Iterable[str] = (glob.glob(str(outdir / "checkpoint-*.pt"))
                            + glob.glob(str(outdir / "*" / "checkpoint-*.pt")))
    cands = [c for c in cands if ".tmp-" not in c]
    if not cands:
        return None
    return Path(max(cands, key=lambda c: (os.path.getmtime(c), c)))
