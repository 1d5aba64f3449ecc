"""Trigger that waits, in the triggerer, for the Indexed Job of a multi-node Kubernetes training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


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
    :param kubernetes_conn_id: Airflow ``kubernetes`` connection.
    :param config_file: Kubeconfig path, if not the connection's.
    :param cluster_context: Kubeconfig context.
    :param in_cluster: Use the in-cluster configuration.
    :param poll_interval: Seconds between reads of the Job status.
    """

    def __init__(
        self,
        *,
        job_name: str,
        namespace: str,
        kubernetes_conn_id: str | None = "kubernetes_default",
        config_file: str | None = None,
        cluster_context: str | None = None,
        in_cluster: bool | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.config_file = config_file
        self.cluster_context = cluster_context
        self.in_cluster = in_cluster
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "namespace": self.namespace,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "config_file": self.config_file,
                "cluster_context": self.cluster_context,
                "in_cluster": self.in_cluster,
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
            kubernetes_conn_id=self.kubernetes_conn_id,
            poll_interval=self.poll_interval,
            cluster_context=self.cluster_context,
            config_file=self.config_file,
            in_cluster=self.in_cluster,
            get_logs=False,
            do_xcom_push=False,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
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
            calls = (
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
