"""The ILSGAN training system: :func:`training_loop` (phases, G_ema, augmentation, snapshots,
checkpoints, resume, data-parallel), used by the CLI ``python -m ilsgan.train``."""

from .faults import PeerLost, RunAborted
from .loop import InfiniteSampler, StopRequest, lazy_adam_params, loss_weights_from_config, training_loop

__all__ = ["training_loop", "InfiniteSampler", "StopRequest", "lazy_adam_params", "loss_weights_from_config",
           "RunAborted", "PeerLost"]
