"""Trigger that waits, in the triggerer, for the Indexed Job of a multi-node Kubernetes training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.utils.k8s import KubernetesConnection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


class KubernetesTrainingJobTrigger(BaseTrigger):
    """
    Wait until a training Job completes or fails, through cncf-kubernetes' ``KubernetesJobTrigger``.

    Two additions to it: an error while waiting ends in an ``{"status": "error"}`` event (so the operator can
    explain it and clean up) instead of failing the task without cleanup, and killing the task deletes the
    Job, its pods and its headless Service (the Job and Service share the name). The event is small: it
    carries no Job object. Yields one event ``{"status": "success" | "error", "message", "name",
    "namespace"}``.

    :param job_name: Name of the Job (and of its headless Service).
    :param namespace: Their namespace.
    :param connection: How to reach the cluster: a
        :class:`~airflow_mlops.utils.k8s.KubernetesConnection` as its ``to_dict()`` (kept whole: connection,
        kubeconfig file and context, in-cluster configuration). None: the defaults.
    :param poll_interval: Seconds between reads of the Job status.
    """

    def __init__(
        self,
        *,
        job_name: str,
        namespace: str,
        connection: Mapping[str, Any] | KubernetesConnection | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.namespace = namespace
        self.connection = (
            connection if isinstance(connection, KubernetesConnection) else KubernetesConnection.from_dict(connection)
        )
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and exactly the constructor arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "namespace": self.namespace,
                "connection": self.connection.to_dict(),
                "poll_interval": self.poll_interval,
            },
        )

    def _event(self, status: str, message: str) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "message": message, "name": self.job_name, "namespace": self.namespace}
        )

    def _job_trigger(self) -> Any:
        from airflow.providers.cncf.kubernetes.triggers.job import KubernetesJobTrigger

        return KubernetesJobTrigger(
            job_name=self.job_name,
            job_namespace=self.namespace,
            pod_names=[],
            pod_namespace=self.namespace,
            base_container_name="base",
            kubernetes_conn_id=self.connection.conn_id,
            poll_interval=self.poll_interval,
            cluster_context=self.connection.cluster_context,
            config_file=self.connection.config_file,
            in_cluster=self.connection.in_cluster,
            get_logs=False,
            do_xcom_push=False,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for the Job through ``KubernetesJobTrigger``; yield one small event."""
        try:
            async for event in self._job_trigger().run():
                yield self._event(event.payload["status"], event.payload["message"])
                return
        except Exception as err:
            self.log.exception("Waiting for Job %s/%s failed", self.namespace, self.job_name)
            yield self._event("error", f"Waiting for Job {self.namespace}/{self.job_name} failed: {err!r}")
            return
        yield self._event("error", f"Waiting for Job {self.namespace}/{self.job_name} ended without a status")

    async def on_kill(self) -> None:
        """Delete the Job (its pods with it) and its Service when the deferred task is killed."""
        from kubernetes_asyncio import client as async_client  # noqa: TID253 - triggerer only

        hook = self._job_trigger().hook
        async with hook.get_conn() as connection:
            calls: tuple[tuple[str, Any, dict[str, Any]], ...] = (
                (
                    "Job",
                    async_client.BatchV1Api(connection).delete_namespaced_job,
                    {"propagation_policy": "Foreground"},
                ),
                ("Service", async_client.CoreV1Api(connection).delete_namespaced_service, {}),
            )
            for what, delete, kwargs in calls:
                try:
                    await delete(self.job_name, self.namespace, **kwargs)
                    self.log.info("Deleted %s %s/%s", what, self.namespace, self.job_name)
                except async_client.ApiException as err:
                    if err.status != 404:
                        self.log.warning(
                            "Could not delete %s %s/%s: %s", what, self.namespace, self.job_name, err
                        )
