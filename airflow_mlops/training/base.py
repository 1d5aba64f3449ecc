"""
The interface of a training runtime: where ``TrainModelOperator`` runs a trainer.

A runtime receives a :class:`~airflow_mlops.training.spec.TrainingSpec` (what to run) and
:class:`TrainingCallbacks` (how to log and how to defer); it never sees the operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol

from airflow_mlops.exceptions import TrainingError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import timedelta

    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_mlops.training.spec import TrainingSpec

#: What a runtime hands back: what the trainer wrote to ``MLOPS_RESULT_PATH`` (a dict, raw text, or None).
RawResult = dict[str, Any] | str | None


class Defer(Protocol):
    """Defer the task to *trigger*; the runtime's :meth:`TrainingRuntime.resume` gets *spec* and *state* back."""

    def __call__(
        self,
        *,
        trigger: BaseTrigger,
        spec: TrainingSpec,
        state: dict[str, Any],
        timeout: timedelta | float | None = None,
    ) -> NoReturn: ...


class TaskLog(Protocol):
    """The part of the task's logger a runtime uses (``%``-style arguments)."""

    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def debug(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


class TrainingCallbacks:
    """
    What a runtime may ask of the task running it.

    A plain class rather than a dataclass: this module is imported while DAG files are parsed.

    :param log: The task's logger.
    :param defer: Hands the wait to a trigger (raises ``TaskDeferred``).
    """

    __slots__ = ("defer", "log")

    def __init__(self, log: TaskLog, defer: Defer) -> None:
        self.log = log
        self.defer = defer


class TrainingRuntime:
    """
    Where a trainer runs. Subclasses implement :meth:`start` and, if they defer, :meth:`resume`.

    A runtime object is configuration; the operator keeps its own copy, and the copy may keep the state of
    the one training it runs (to stop it). Its ``template_fields`` (if any) are rendered with the operator's
    templates.
    """

    #: Name of the runtime in logs and docs.
    name: ClassVar[str] = ""
    template_fields: Sequence[str] = ()

    def check(self, *, env: Mapping[str, str] | None) -> None:
        """Validate the runtime against the operator's literal arguments (no I/O); raise ValueError."""

    def start(self, spec: TrainingSpec, context: Context, callbacks: TrainingCallbacks) -> RawResult:
        """
        Start the trainer and return what it wrote to ``MLOPS_RESULT_PATH``.

        May defer instead (``callbacks.defer``); the operator then calls :meth:`resume`.
        """
        raise NotImplementedError

    def resume(
        self,
        spec: TrainingSpec,
        context: Context,
        callbacks: TrainingCallbacks,
        event: dict[str, Any],
        state: dict[str, Any],
    ) -> RawResult:
        """Finish a deferred start: *event* from the trigger, *state* as given to ``callbacks.defer``."""
        raise TrainingError(f"The {self.name!r} training runtime does not defer")

    def stop(self) -> None:
        """Stop the running trainer (the task was killed)."""
