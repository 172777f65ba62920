"""The ILSGAN training system: :func:`prepare_run` (configuration + resume choice -> a prepared run,
done once) and :func:`train` (phases, G_ema, augmentation, snapshots, checkpoints, resume,
data-parallel), used by the CLI ``python -m ilsgan.train``."""

from .faults import PeerLost, RunAborted
from .loop import InfiniteSampler, Trainer, lazy_adam_params, train
from .prepare import PreparedRun, StopRequest, op_backends, prepare_run

__all__ = ["prepare_run", "train", "PreparedRun", "Trainer", "InfiniteSampler", "StopRequest", "lazy_adam_params",
           "op_backends", "RunAborted", "PeerLost"]
