"""Trigger that waits, in the triggerer, until a KServe ``InferenceService`` is Ready for a given generation."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.serving.kserve import API_VERSION, GROUP, PLURAL, inference_service_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Consecutive failed status reads (API errors, network) after which the trigger gives up.
MAX_CONSECUTIVE_ERRORS = 5


class KServeInferenceServiceReadyTrigger(BaseTrigger):
    """
    Poll an ``InferenceService`` with the async Kubernetes client until it is Ready, failed, or too late.

    The cncf-kubernetes provider has no async wait for custom objects; this trigger reads the resource through
    its ``AsyncKubernetesHook`` and judges it with
    :func:`airflow_mlops.serving.kserve.inference_service_state`. It yields exactly one event:
    ``{"status": "success", "message", "name", "namespace", "url", "generation"}`` when Ready, or
    ``{"status": "failed" | "timeout" | "error", "message", "name", "namespace"}``.

    :param name: Name of the ``InferenceService``.
    :param namespace: Its namespace.
    :param kubernetes_conn_id: Airflow ``kubernetes`` connection.
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
        namespace: str,
        kubernetes_conn_id: str = "kubernetes_default",
        min_generation: int | None = None,
        deadline: float,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.min_generation = min_generation
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "name": self.name,
                "namespace": self.namespace,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "min_generation": self.min_generation,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
            },
        )

    def _event(self, status: str, message: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "message": message, "name": self.name, "namespace": self.namespace, **extra}
        )

    async def _read(self) -> dict[str, Any]:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio.client import CustomObjectsApi

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        async with hook.get_conn() as api_client:
            return await CustomObjectsApi(api_client).get_namespaced_custom_object(
                GROUP, API_VERSION, self.namespace, PLURAL, self.name
            )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from kubernetes_asyncio.client.exceptions import ApiException

        where = f"InferenceService {self.namespace}/{self.name}"
        errors = 0
        message = "no status read yet"
        while True:
            try:
                obj = await self._read()
            except ApiException as err:
                if err.status == 404:
                    yield self._event("failed", f"{where} does not exist (deleted while rolling out?)")
                    return
                errors += 1
                message = f"Kubernetes API answered HTTP {err.status} {err.reason}"
            except Exception as err:  # network errors, config errors: retried, then reported
                errors += 1
                message = f"cannot read {where}: {type(err).__name__}: {err}"
            else:
                errors = 0
                state, message = inference_service_state(obj, self.min_generation)
                if state == "ready":
                    generation = (obj.get("metadata") or {}).get("generation")
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
