"""Trigger that waits, in the triggerer, until a KServe ``InferenceService`` is Ready for a given generation."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.hooks.kserve import AsyncKServeHook
from airflow_mlops.utils.k8s import KubernetesConnection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

#: Consecutive failed status reads (API errors, network) after which the trigger gives up.
MAX_CONSECUTIVE_ERRORS = 5


class KServeInferenceServiceReadyTrigger(BaseTrigger):
    """
    Poll an ``InferenceService`` with the async Kubernetes client until it is Ready, failed, or too late.

    The cncf-kubernetes provider has no async wait for custom objects; this trigger reads the resource through
    :class:`~airflow_mlops.hooks.kserve.AsyncKServeHook` and judges it with
    :func:`~airflow_mlops.hooks.kserve.inference_service_state`, as the KServe target does. It yields exactly
    one event: ``{"status": "success", "message", "name", "namespace", "url", "generation"}`` when Ready, or
    ``{"status": "failed" | "timeout" | "error", "message", "name", "namespace"}``.

    :param name: Name of the ``InferenceService``.
    :param connection: How to reach the cluster and the namespace of the resource:
        :meth:`KubernetesConnection.to_dict() <airflow_mlops.utils.k8s.KubernetesConnection.to_dict>`
        (``conn_id``, ``namespace``, ``config_file``, ``cluster_context``, ``in_cluster``).
    :param min_generation: The ``metadata.generation`` the controller must have observed (the one the deploy
        wrote); None accepts any.
    :param deadline: Epoch seconds after which the wait ends with ``timeout`` (absolute, so a restarted
        triggerer keeps the original limit).
    :param poll_interval: Seconds between reads.
    """

    def __init__(
        self,
        *,
        name: str,
        connection: Mapping[str, Any] | None = None,
        min_generation: int | None = None,
        deadline: float,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.connection = KubernetesConnection.from_dict(connection).to_dict()
        self.min_generation = min_generation
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)

    @property
    def namespace(self) -> str:
        """Namespace of the resource (the connection's, else ``default``)."""
        return self.connection.get("namespace") or "default"

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "name": self.name,
                "connection": dict(self.connection),
                "min_generation": self.min_generation,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
            },
        )

    def _event(self, status: str, message: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "message": message, "name": self.name, "namespace": self.namespace, **extra}
        )

    def _hook(self) -> AsyncKServeHook:
        return AsyncKServeHook(**KubernetesConnection.from_dict(self.connection).kserve_hook_kwargs())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from kubernetes_asyncio.client.exceptions import ApiException

        where = f"InferenceService {self.namespace}/{self.name}"
        hook = self._hook()
        errors = 0
        message = "no status read yet"
        while True:
            try:
                state, message, obj = await hook.aget_state(self.name, self.min_generation)
            except ApiException as err:
                errors += 1
                message = f"Kubernetes API answered HTTP {err.status} {err.reason}"
            except Exception as err:  # network errors, config errors: retried, then reported
                errors += 1
                message = f"cannot read {where}: {type(err).__name__}: {err}"
            else:
                errors = 0
                if state == "missing":
                    yield self._event("failed", f"{where} does not exist (deleted while rolling out?)")
                    return
                if state == "ready":
                    generation = ((obj or {}).get("metadata") or {}).get("generation")
                    yield self._event("success", f"{where} is Ready", url=message, generation=generation)
                    return
                if state == "failed":
                    yield self._event("failed", f"{where} failed to roll out: {message}")
                    return
                self.log.info("%s not Ready yet: %s", where, message)
            if errors >= MAX_CONSECUTIVE_ERRORS:
                yield self._event("error", f"{where}: {errors} status reads failed in a row; last: {message}")
                return
            if time.time() + self.poll_interval > self.deadline:
                yield self._event("timeout", f"{where} was not Ready before the deadline: {message}")
                return
            await asyncio.sleep(self.poll_interval)
