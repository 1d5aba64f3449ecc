"""
Helpers for long trainings: a final checkpoint on a preemption notice, distributed ranks, system metrics.

Kubernetes gives a pod notice before it takes it away (preemption by a higher-priority pod, eviction, a
drained or reclaimed spot node): it sends ``SIGTERM`` to the container and waits
``terminationGracePeriodSeconds`` before ``SIGKILL``. The local runtime sends ``SIGTERM`` too when the task is
killed or times out. :class:`PreemptionGuard` turns that signal into a flag the training loop checks between
steps, so the trainer writes one last checkpoint at a consistent point and exits; the next try (same
``MLOPS_CHECKPOINT_URI``) resumes from it::

    from airflow_mlops.trainer.lifecycle import PreemptionGuard

    with PreemptionGuard() as guard:
        for step in range(start, total_steps):
            train_one_step()
            if guard.requested or step % 100 == 0:
                ctx.save_checkpoint(state_bytes(step + 1))
            guard.exit_if_requested()  # SystemExit(143) after the checkpoint above

This module imports neither Airflow nor any heavy library (mlflow is imported lazily).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

log = logging.getLogger("airflow_mlops.trainer")

#: Exit code of a trainer that stopped on a preemption notice (128 + SIGTERM, as a shell reports it).
EXIT_PREEMPTED = 128 + signal.SIGTERM
#: MLflow's own switch for system metrics (CPU, memory, disk, network, GPU) of runs started by the process.
SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"


class PreemptionGuard:
    """
    Record a preemption notice (``SIGTERM`` by default) instead of dying at once; see the module docstring.

    The handler only sets a flag: the training loop decides where to stop, so the final checkpoint is taken
    between two steps, never in the middle of one. Use it as a context manager (the previous handlers are
    restored on exit). Signal handlers can only be installed from the main thread; elsewhere the guard is
    inert and says so in the log.

    :param on_preempt: Called once by :meth:`exit_if_requested` before the process exits, e.g. to save the
        final checkpoint (if the loop did not just do so).
    :param signals: Signals that count as a preemption notice.
    :param exit_code: Exit code after a preemption notice (default :data:`EXIT_PREEMPTED`).
    """

    def __init__(
        self,
        on_preempt: Callable[[], Any] | None = None,
        signals: Iterable[int] = (signal.SIGTERM,),
        exit_code: int = EXIT_PREEMPTED,
    ) -> None:
        self.on_preempt = on_preempt
        self.signals = tuple(signals)
        self.exit_code = exit_code
        self._event = threading.Event()
        self._signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            log.warning("PreemptionGuard used outside the main thread: signals are not intercepted")
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._event.is_set():
            self._signal = signum
            self._event.set()
            # Logging from a signal handler is not reentrant-safe; os.write is.
            os.write(2, f"Received {signal.Signals(signum).name}: stopping after this step\n".encode())

    @property
    def requested(self) -> bool:
        """Whether a preemption notice arrived."""
        return self._event.is_set()

    def request(self) -> None:
        """Mark a preemption as requested (e.g. because another rank received the notice)."""
        self._event.set()

    def exit_if_requested(self) -> None:
        """If a notice arrived: run ``on_preempt`` (the final checkpoint), then exit with ``exit_code``."""
        if not self.requested:
            return
        if self.on_preempt is not None:
            self.on_preempt()
        name = signal.Signals(self._signal).name if self._signal else "a stop request"
        log.warning("Stopped on %s; a retry resumes from the last checkpoint", name)
        raise SystemExit(self.exit_code)


def process_rank() -> tuple[int, int, int]:
    """
    ``(rank, local_rank, world_size)`` of this process, from the variables ``torchrun`` sets.

    ``(0, 0, 1)`` for a process that is not part of a distributed run.
    """
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return rank, local_rank, world_size


def is_main_process() -> bool:
    """Whether this is rank 0, the process that logs the model and writes the result."""
    return process_rank()[0] == 0


def enable_system_metrics(sampling_interval: float | None = None) -> bool:
    """
    Make MLflow record system metrics (CPU, memory, disk, network; GPU with ``nvidia-ml-py``) of this process.

    They are recorded for the runs this process starts or resumes.

    Off when ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is explicitly false, or when ``psutil`` (which MLflow
    samples with) is not installed. Call it before ``mlflow.start_run``, in the main process only.

    :param sampling_interval: Seconds between samples (MLflow's default is 10).
    :return: Whether system metrics are on.
    """
    if os.environ.get(SYSTEM_METRICS_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if importlib.util.find_spec("psutil") is None:
        log.warning("System metrics are off: install psutil (and nvidia-ml-py for GPU metrics)")
        return False
    import mlflow

    if sampling_interval is not None:
        mlflow.set_system_metrics_sampling_interval(sampling_interval)
    mlflow.enable_system_metrics_logging()
    return True
