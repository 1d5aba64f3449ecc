"""
Triggers that wait, in the triggerer, for a Kubernetes training.

Its Indexed Job, its Kubeflow Trainer TrainJob, or its admission by a Kueue queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.utils.k8s import KubernetesConnection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping


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
            connection
            if isinstance(connection, KubernetesConnection)
            else KubernetesConnection.from_dict(connection)
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


#: What a Kueue admission trigger can wait for: ``kind -> (group, version, plural)`` of the custom objects.
_TRAINJOB = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
_KUEUE_GATE = "kueue.x-k8s.io/admission"


class _PollingTrigger(BaseTrigger):
    """What the two polling triggers share: the object, the cluster, the poll interval, the small event."""

    kind = ""

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        connection: Mapping[str, Any] | KubernetesConnection | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.namespace = namespace
        self.connection = (
            connection
            if isinstance(connection, KubernetesConnection)
            else KubernetesConnection.from_dict(connection)
        )
        self.poll_interval = float(poll_interval)

    def _kwargs(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "connection": self.connection.to_dict(),
            "poll_interval": self.poll_interval,
        }

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and exactly the constructor arguments."""
        return f"{type(self).__module__}.{type(self).__qualname__}", self._kwargs()

    def _event(self, status: str, message: str, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "message": message, "name": self.name, "namespace": self.namespace, **extra}
        )

    def _hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

        return AsyncKubernetesHook(**self.connection.hook_kwargs())

    async def _delete(self, connection: Any, kind: str) -> None:
        """Delete the object of *kind* (its pods with it); a Job's headless Service too."""
        from kubernetes_asyncio import client as async_client  # noqa: TID253 - triggerer only

        name, namespace = self.name, self.namespace
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]]
        if kind == "TrainJob":
            group, version, plural = _TRAINJOB
            custom = async_client.CustomObjectsApi(connection)
            calls = [("TrainJob", lambda: custom.delete_namespaced_custom_object(
                group, version, namespace, plural, name, propagation_policy="Foreground"))]  # fmt: skip
        elif kind == "Job":
            batch, core = async_client.BatchV1Api(connection), async_client.CoreV1Api(connection)
            calls = [
                (
                    "Job",
                    lambda: batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground"),
                ),
                ("Service", lambda: core.delete_namespaced_service(name, namespace)),
            ]
        else:
            core = async_client.CoreV1Api(connection)
            calls = [("Pod", lambda: core.delete_namespaced_pod(name, namespace))]
        for what, delete in calls:
            try:
                await delete()
                self.log.info("Deleted %s %s/%s", what, namespace, name)
            except async_client.ApiException as err:
                if err.status != 404:
                    self.log.warning("Could not delete %s %s/%s: %s", what, namespace, name, err)


class KueueAdmissionTrigger(_PollingTrigger):
    """
    Wait until Kueue admits a queued training workload, or give up after *timeout* seconds.

    A Job or TrainJob created suspended is admitted when Kueue sets ``spec.suspend`` to false; a pod when
    Kueue removes its ``kueue.x-k8s.io/admission`` scheduling gate. Yields one event ``{"status": "admitted" |
    "timeout" | "gone" | "error", "message", "name", "namespace", "kind", "waited"}``. Killing the task
    deletes the queued object.

    :param kind: ``Pod``, ``Job`` or ``TrainJob``.
    :param name: Its name.
    :param namespace: Its namespace.
    :param queue_name: The Kueue LocalQueue it waits on (for the messages).
    :param timeout: Seconds to wait for admission.
    :param connection: How to reach the cluster (see :class:`KubernetesTrainingJobTrigger`).
    :param poll_interval: Seconds between reads.
    """

    def __init__(
        self,
        *,
        kind: str,
        name: str,
        namespace: str,
        queue_name: str,
        timeout: float,
        connection: Mapping[str, Any] | KubernetesConnection | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__(name=name, namespace=namespace, connection=connection, poll_interval=poll_interval)
        if kind not in ("Pod", "Job", "TrainJob"):
            raise ValueError(f"kind must be 'Pod', 'Job' or 'TrainJob', got {kind!r}")
        self.kind = kind
        self.queue_name = queue_name
        self.timeout = float(timeout)

    def _kwargs(self) -> dict[str, Any]:
        return {
            **super()._kwargs(),
            "kind": self.kind,
            "queue_name": self.queue_name,
            "timeout": self.timeout,
        }

    async def _admitted(self, connection: Any) -> bool:
        from kubernetes_asyncio import client as async_client  # noqa: TID253 - triggerer only

        if self.kind == "TrainJob":
            group, version, plural = _TRAINJOB
            obj = await async_client.CustomObjectsApi(connection).get_namespaced_custom_object(
                group, version, self.namespace, plural, self.name
            )
            return not (obj.get("spec") or {}).get("suspend")
        if self.kind == "Job":
            job = await async_client.BatchV1Api(connection).read_namespaced_job(self.name, self.namespace)
            return not job.spec.suspend
        pod = await async_client.CoreV1Api(connection).read_namespaced_pod(self.name, self.namespace)
        return not any(gate.name == _KUEUE_GATE for gate in pod.spec.scheduling_gates or [])

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the object until it is admitted, gone, or the admission timeout has passed."""
        import asyncio
        import time

        from kubernetes_asyncio import client as async_client  # noqa: TID253 - triggerer only

        started = time.monotonic()
        where = f"{self.kind} {self.namespace}/{self.name} on Kueue queue {self.queue_name!r}"
        try:
            async with self._hook().get_conn() as connection:
                while True:
                    waited = round(time.monotonic() - started, 1)
                    try:
                        if await self._admitted(connection):
                            yield self._event("admitted", f"{where} was admitted after {waited} s", kind=self.kind,
                                              waited=waited)  # fmt: skip
                            return
                    except async_client.ApiException as err:
                        if err.status != 404:
                            raise
                        yield self._event(
                            "gone", f"{where} was deleted while queued", kind=self.kind, waited=waited
                        )
                        return
                    if waited >= self.timeout:
                        yield self._event(
                            "timeout", f"{where} was not admitted within {self.timeout:g} s", kind=self.kind,
                            waited=waited,
                        )  # fmt: skip
                        return
                    await asyncio.sleep(self.poll_interval)
        except Exception as err:
            self.log.exception("Waiting for the admission of %s failed", where)
            yield self._event("error", f"Waiting for the admission of {where} failed: {err!r}", kind=self.kind,
                              waited=round(time.monotonic() - started, 1))  # fmt: skip

    async def on_kill(self) -> None:
        """Delete the queued object when the deferred task is killed."""
        async with self._hook().get_conn() as connection:
            await self._delete(connection, self.kind)


class TrainJobTrigger(_PollingTrigger):
    """
    Wait until a Kubeflow Trainer ``TrainJob`` is ``Complete`` or ``Failed`` (its status conditions).

    Yields one small event ``{"status": "success" | "failed" | "error", "message", "reason", "name",
    "namespace"}``: for a failed TrainJob, the reason and message of its ``Failed`` condition. Killing the
    task deletes the TrainJob (its JobSet and pods with it).

    :param name: Name of the TrainJob.
    :param namespace: Its namespace.
    :param connection: How to reach the cluster (see :class:`KubernetesTrainingJobTrigger`).
    :param poll_interval: Seconds between reads of its status.
    """

    kind = "TrainJob"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the TrainJob's conditions until it finished; yield one small event."""
        import asyncio

        from kubernetes_asyncio import client as async_client  # noqa: TID253 - triggerer only

        group, version, plural = _TRAINJOB
        where = f"TrainJob {self.namespace}/{self.name}"
        try:
            async with self._hook().get_conn() as connection:
                api = async_client.CustomObjectsApi(connection)
                while True:
                    try:
                        obj = await api.get_namespaced_custom_object(
                            group, version, self.namespace, plural, self.name
                        )
                    except async_client.ApiException as err:
                        if err.status != 404:
                            raise
                        yield self._event("error", f"{where} disappeared", reason="Deleted")
                        return
                    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
                    for kind, status in (("Failed", "failed"), ("Complete", "success")):
                        condition = conditions.get(kind) or {}
                        if condition.get("status") == "True":
                            yield self._event(
                                status,
                                f"{where} {kind.lower()}: {condition.get('message') or condition.get('reason')}",
                                reason=condition.get("reason") or kind,
                            )
                            return
                    await asyncio.sleep(self.poll_interval)
        except Exception as err:
            self.log.exception("Waiting for %s failed", where)
            yield self._event("error", f"Waiting for {where} failed: {err!r}", reason="WaitFailed")

    async def on_kill(self) -> None:
        """Delete the TrainJob (its JobSet and pods with it) when the deferred task is killed."""
        async with self._hook().get_conn() as connection:
            await self._delete(connection, "TrainJob")
