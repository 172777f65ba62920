"""What a training run does when something outside it fails: a snapshot that cannot be written, image
files that vanish or break under the run, a process of a multi-process run that dies or hangs.

The rule is the same for all: what is on disk stays loadable, the message says what happened and what
was kept, and nothing waits forever. :class:`RunAborted` is raised when the run cannot go on; the CLI
prints its message as one line.
"""

from __future__ import annotations

from typing import Optional, Tuple

__all__ = ["RunAborted", "PeerLost", "DataFailureMonitor", "is_comm_failure", "DEFAULT_MAX_DATA_FAILURES",
           "DATA_FAILURE_WINDOW"]

# At most this fraction of the image reads in a window may fail before the run stops: a few files
# deleted or rewritten while training are skipped, a dataset that went away (unmounted disk, moved
# folder) stops the run instead of training on whatever images remain.
DEFAULT_MAX_DATA_FAILURES = 0.05
DATA_FAILURE_WINDOW = 1000  # image reads per window; early in a run the partial window counts


class RunAborted(RuntimeError):
    """The run cannot go on. The message says why and which checkpoint on disk holds the progress."""


class PeerLost(RunAborted):
    """A collective operation of a multi-process run failed or timed out: another process died or hangs."""


# Gloo raises plain RuntimeErrors whose text names its source file ("gloo/transport/tcp/pair.cc:553]
# Connection closed by peer", "Timed out waiting 3000ms for recv operation"); NCCL raises DistError.
_COMM_MARKERS = ("gloo", "nccl", "connection closed by peer", "connection reset by peer", "timed out waiting",
                 "broken pipe", "process group")


def is_comm_failure(e: BaseException) -> bool:
    """True for the errors ``torch.distributed`` collectives raise when a peer died, hangs past the
    timeout or the connection broke."""
    try:
        from torch.distributed import DistError
        if isinstance(e, DistError):
            return True
    except ImportError:  # older torch: only the message tells
        pass
    if not isinstance(e, RuntimeError) or isinstance(e, RunAborted):
        return False
    msg = str(e).lower()
    return any(m in msg for m in _COMM_MARKERS)


class DataFailureMonitor:
    """Watches a dataset's read counter (``dataset.read_counter``, see
    :class:`ilsgan.data.folders.ReadCounter`; any object with ``totals() -> (reads, failures)``).

    :meth:`check` returns a message once more than ``max_fraction`` of the image reads of the current
    window of ``window`` reads failed, else None. Counting per window, not since the start, makes a
    dataset that breaks late in a long run stop it as soon as one that breaks early."""

    def __init__(self, counter, max_fraction: float = DEFAULT_MAX_DATA_FAILURES, window: int = DATA_FAILURE_WINDOW,
                 what: str = "the dataset"):
        if not 0 <= max_fraction < 1:
            raise ValueError(f"max_fraction must be in [0, 1), got {max_fraction!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.counter, self.max_fraction, self.window, self.what = counter, float(max_fraction), int(window), what
        self._base: Tuple[int, int] = self.totals()

    def totals(self) -> Tuple[int, int]:
        if self.counter is None:
            return 0, 0
        reads, failures = self.counter.totals()
        return int(reads), int(failures)

    def check(self) -> Optional[str]:
        reads, failures = self.totals()
        r, f = reads - self._base[0], failures - self._base[1]
        # failures over the whole window's budget stop at once (a vanished folder fails every read);
        # below it, a window that ends within budget starts the next one.
        if f > self.max_fraction * self.window:
            return (f"{f} of the last {r} image reads failed (more than {self.max_fraction:.0%} of "
                    f"{self.window}): files of {self.what} were deleted, moved or changed under the run")
        if r >= self.window:
            self._base = (reads, failures)
        return None

