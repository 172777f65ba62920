"""Everything a training run needs before its first iteration, done once: :func:`prepare_run` turns a
configuration and a resume choice into a :class:`PreparedRun` (the final configuration, the device and
op backends, the resume checkpoint loaded and checked, the run directory, the training images opened),
which is all :func:`ilsgan.training.train` receives.

What can go wrong here is the caller's choice (an unknown device, a checkpoint of another network,
an empty dataset, an unwritable folder): it is raised as :class:`~ilsgan.config.ConfigError`, whose
message names the option, and nothing has been trained yet.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from .. import checkpoints as ck
from .. import data as data_mod
from ..config import FIELDS, ConfigError, SessionConfig, TrainConfig
from ..precision import describe as describe_precision

__all__ = ["PreparedRun", "prepare_run", "StopRequest", "op_backends"]


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


@dataclass
class PreparedRun:
    """A run ready to train. ``checkpoint``: the resume checkpoint (:func:`ilsgan.checkpoints.load_checkpoint`'s
    dict; None for a new run); ``changes``: ``(setting, checkpoint's value, this run's value)`` of the
    settings a resume changes; ``notes``: lines for the run's header; ``precision``: what the
    mixed-precision blocks compute in (:func:`ilsgan.precision.describe`: the header's line and
    config.json's record)."""
    config: TrainConfig
    run_dir: Path
    dataset: Any
    device: torch.device
    op_backends: Dict[str, str]
    precision: Dict[str, Any]
    checkpoint: Optional[Dict[str, Any]] = None
    changes: List[Tuple[str, Any, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    stop: StopRequest = field(default_factory=StopRequest)
    log_fn: Callable[[str], None] = print

    @property
    def resumed_from(self) -> Optional[str]:
        return self.checkpoint["path"] if self.checkpoint is not None else None


def op_backends(device_type: str, impl: str) -> Dict[str, str]:
    """The backend each op runs on ``device_type`` tensors for ``impl`` (what a run records)."""
    from ..ops import backend_info
    return {op: d[device_type]["auto"] if impl == "auto" else impl for op, d in sorted(backend_info().items())}


def _open_training_data(config: TrainConfig):
    """The training images of ``config``: at its resolution, with its crop, in the order of its seed."""
    return data_mod.open_dataset(config.data.data, config.network.resolution, split="train",
                                 seed=config.run.seed, crop=config.data.crop)


def _device(name: Optional[str]) -> torch.device:
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available in this torch build/machine")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda[:N], got {name!r}")
    return dev


def _check_outdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory {str(path)!r}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {str(path)!r} is not writable")
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory {str(path)!r} is not writable: {e.strerror or e}") from None


def _load_resume(resume, outdir: Path) -> Dict[str, Any]:
    """A directory ('latest' = ``outdir``) resumes from its newest *readable* checkpoint, warning about
    any newer one it skips; a file is used as named. Both read with weights_only=True (no code runs)."""
    path = outdir if str(resume) == "latest" else Path(resume).expanduser()
    try:
        # 'latest' names --outdir even when it does not exist yet; load_checkpoint takes a directory too
        return ck.load_latest(path) if str(resume) == "latest" else ck.load_checkpoint(path)
    except ck.CheckpointError as e:
        raise ConfigError(f"--resume {resume}: {e}") from None


def _run_dir(session: SessionConfig, checkpoint: Optional[Dict[str, Any]], rank: int) -> Path:
    """The resumed run's directory (unless --name), else ``outdir/name`` (default: a timestamp)."""
    if checkpoint is not None and session.name is None:
        return Path(checkpoint["path"]).parent
    outdir = Path(session.outdir).expanduser()
    name = session.name or time.strftime("%Y%m%d-%H%M%S")
    run_dir = outdir / name
    if rank == 0 and session.name is None and run_dir.exists():
        run_dir = outdir / f"{name}-{os.getpid()}"
    return run_dir


def _set_up_process(session: SessionConfig, device: torch.device) -> List[str]:
    notes = []
    if session.threads:
        torch.set_num_threads(session.threads)
    if device.type == "cpu" and session.cpu_malloc == "tuned":
        from .cpu_malloc import tune_malloc_for_training
        notes.append(tune_malloc_for_training())
    return notes


def prepare_run(config: Optional[TrainConfig], resume=None, overrides: Mapping[str, Any] = (), *,
                log_fn: Callable[[str], None] = print) -> PreparedRun:
    """Prepare a run of ``config`` with the settings ``overrides`` (name -> value) applied.

    ``resume``: None (a new run), a checkpoint file, a run directory, or ``"latest"`` (the newest
    readable checkpoint under ``outdir``). With ``config`` None the run continues with the checkpoint's
    configuration (its ``session`` settings excepted: those are this invocation's); either way the
    checkpoint's network must equal the run's (else :class:`ConfigError` naming each differing
    setting), and the other settings that differ are listed in :attr:`PreparedRun.changes`.

    Opens the dataset once (an empty one is an error), loads the checkpoint once, chooses the run
    directory once (rank 0 creates it and checks that it is writable) and resolves the device, the
    op backends and the precision once. The process-wide settings ``threads`` and ``cpu_malloc`` are
    applied here.
    """
    overrides = dict(overrides)
    if config is None and resume is None:
        raise ConfigError("prepare_run: give a config, a checkpoint to resume, or both")
    session_overrides = {k: v for k, v in overrides.items() if FIELDS.get(k) == "session"}
    session = (config if config is not None else TrainConfig()).replace(**session_overrides).session
    device = _device(session.device)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))

    checkpoint = None
    changes: List[Tuple[str, Any, Any]] = []
    if resume is not None:
        checkpoint = _load_resume(resume, Path(session.outdir).expanduser())
        saved: TrainConfig = checkpoint["config"]
        base = config if config is not None else dataclasses.replace(saved, session=SessionConfig())
        config = base.replace(**overrides)
        try:
            changes = ck.check_config_compatible(saved, config, where=f"checkpoint {checkpoint['path']!r}")
        except ck.CheckpointError as e:
            raise ConfigError(str(e)) from None
    else:
        config = config.replace(**overrides)
    config = config.replace(device=str(device))
    if config.optim.batch % world:
        raise ConfigError(f"--batch {config.optim.batch} is not divisible by the number of processes {world}")
    if config.loss.w_div and config.optim.batch // world < 2:
        raise ConfigError(f"--w-div compares the masks within a batch: it needs at least 2 samples per process, "
                          f"got --batch {config.optim.batch} over {world} process(es)")
    notes = _set_up_process(config.session, device)  # process-wide: only once the settings are valid

    run_dir = _run_dir(config.session, checkpoint, rank)
    if rank == 0:
        _check_outdir(run_dir)
    try:
        dataset = _open_training_data(config)
        if len(dataset) == 0:
            raise data_mod.DatasetError(f"dataset {config.data.data!r} contains no images")
    except data_mod.DatasetError as e:
        raise ConfigError(f"--data: {e}") from None
    return PreparedRun(config=config, run_dir=run_dir, dataset=dataset, device=device,
                       op_backends=op_backends(device.type, config.session.impl),
                       precision=describe_precision(config.network.precision, device, config.network.num_fp16_res),
                       checkpoint=checkpoint,
                       changes=changes, notes=notes, log_fn=log_fn)
