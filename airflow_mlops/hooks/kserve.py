"""
KServe ``InferenceService`` resources through the cncf-kubernetes hooks: reads, writes and readiness.

:class:`KServeHook` (blocking, on ``KubernetesHook``) is what the KServe deploy target uses;
:class:`AsyncKServeHook` (on ``AsyncKubernetesHook``) is what its trigger uses in the triggerer. Both reach the
cluster as one :class:`~airflow_mlops.utils.k8s.KubernetesConnection` describes (connection, kubeconfig file
and context, or the in-cluster configuration), and both judge a resource with
:func:`inference_service_state`, so the target and the trigger agree on what "Ready" and "failed" mean.

The cncf-kubernetes hook modules import the ``kubernetes`` client, so they are imported when a hook first
talks to the cluster, never when this module is imported (DAG files import it through the operators).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.utils.k8s import KubernetesConnection

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook, KubernetesHook

GROUP = "serving.kserve.io"
API_VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
#: Reasons of a ``False`` condition that mean the rollout failed (not just "still in progress").
FAILED_REASONS = frozenset({"RevisionFailed", "ModelLoadFailed", "InvalidPredictorSpec"})
#: ``status.modelStatus.transitionStatus`` values that mean the model cannot load.
FAILED_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
#: HTTP statuses of the Kubernetes API after which the same request can succeed later.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def inference_service_state(obj: Mapping[str, Any], min_generation: int | None = None) -> tuple[str, str]:
    """
    Where an ``InferenceService`` stands: ``("ready" | "failed" | "pending", message)``.

    Ready means: the controller has seen generation *min_generation* (``status.observedGeneration``), the
    ``Ready`` condition is ``True`` and the latest created predictor revision is the latest ready one. Failed
    means: the model failed to load (``status.modelStatus``) or a condition reports a failed revision
    (:data:`FAILED_REASONS`), for that generation; waiting longer cannot help. For a ready resource the
    message is its URL.
    """
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    fresh = min_generation is None or (observed is not None and int(observed) >= int(min_generation))
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
    model_status = status.get("modelStatus") or {}
    states = model_status.get("states") or {}
    failure = model_status.get("lastFailureInfo") or {}
    if fresh and (
        model_status.get("transitionStatus") in FAILED_TRANSITIONS
        or states.get("targetModelState") == "FailedToLoad"
    ):
        detail = failure.get("message") or model_status.get("transitionStatus")
        return "failed", f"{failure.get('reason') or 'ModelLoadFailed'}: {detail}"
    if fresh:
        for condition in conditions.values():
            if condition.get("status") == "False" and condition.get("reason") in FAILED_REASONS:
                return (
                    "failed",
                    f"{condition.get('type')} {condition.get('reason')}: {condition.get('message')}",
                )
    ready = conditions.get("Ready") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    latest_created, latest_ready = (
        predictor.get("latestCreatedRevision"),
        predictor.get("latestReadyRevision"),
    )
    rolled_out = not latest_created or latest_created == latest_ready
    if fresh and ready.get("status") == "True" and rolled_out:
        return "ready", status.get("url") or ""
    if not fresh:
        return (
            "pending",
            f"waiting for the controller to observe generation {min_generation} (seen: {observed})",
        )
    reason = ready.get("reason") or (
        f"rolling out revision {latest_created}" if not rolled_out else "no Ready yet"
    )
    return "pending", f"{reason}: {ready.get('message') or ''}".rstrip(": ")


def describe_conditions(obj: Mapping[str, Any]) -> str:
    """The resource's conditions and last model-load failure, in one line for error messages."""
    status = obj.get("status") or {}
    conditions = "; ".join(
        f"{c.get('type')}={c.get('status')} {c.get('reason') or ''} {c.get('message') or ''}".strip()
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    )
    failure = (status.get("modelStatus") or {}).get("lastFailureInfo")
    return f"conditions: {conditions or 'none'}" + (f"; last failure: {failure}" if failure else "")


def api_error_is_retryable(status: int | None) -> bool:
    """Whether a Kubernetes API answer with HTTP *status* may succeed on a later try (5xx, 408, 409, 429)."""
    return status is None or status >= 500 or status in RETRYABLE_STATUSES


class KServeHook(BaseHook):
    """
    Read and write KServe ``InferenceService`` resources with the blocking Kubernetes client.

    Built on the cncf-kubernetes ``KubernetesHook`` (an Airflow ``kubernetes`` connection, or a kubeconfig
    file and context, or the in-cluster configuration). Reads of a missing resource return ``None``;
    other API errors are the client's ``ApiException`` (the caller decides what they mean).

    :param kubernetes_conn_id: The Airflow ``kubernetes`` connection (``None``: the cncf-kubernetes hook's
        defaults).
    :param namespace: The default namespace of every method (``None``: the connection's, else ``"default"``).
    :param config_file: Kubeconfig path, if not the connection's.
    :param cluster_context: Kubeconfig context.
    :param in_cluster: Use the in-cluster configuration.
    :param connection: Deprecated: all of the above as one
        :class:`~airflow_mlops.utils.k8s.KubernetesConnection` (or its dict), the only argument of earlier
        releases, also taken in the place of ``kubernetes_conn_id``; it warns and wins over the others.
    """

    conn_name_attr = "kubernetes_conn_id"
    default_conn_name = "kubernetes_default"
    conn_type = "kubernetes"
    hook_name = "KServe"

    def __init__(
        self,
        # A KubernetesConnection (or its dict) here is the deprecated positional form of ``connection``.
        kubernetes_conn_id: str | KubernetesConnection | Mapping[str, Any] | None = default_conn_name,
        *,
        namespace: str | None = None,
        config_file: str | None = None,
        cluster_context: str | None = None,
        in_cluster: bool | None = None,
        connection: KubernetesConnection | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(kubernetes_conn_id, KubernetesConnection | Mapping):  # KServeHook(connection)
            connection, kubernetes_conn_id = kubernetes_conn_id, self.default_conn_name
        if connection is not None:
            warnings.warn(
                f"{type(self).__name__}(connection=...) is deprecated: pass kubernetes_conn_id= (and "
                "namespace=, config_file=, cluster_context=, in_cluster= where needed), as for the "
                "cncf-kubernetes hooks",
                DeprecationWarning,
                stacklevel=2,
            )
            if not isinstance(connection, KubernetesConnection):
                connection = KubernetesConnection.from_dict(connection)
        else:
            connection = KubernetesConnection(
                conn_id=kubernetes_conn_id,
                namespace=namespace,
                config_file=config_file,
                cluster_context=cluster_context,
                in_cluster=in_cluster,
            )
        self.connection = connection
        self.kubernetes_conn_id = connection.conn_id

    @property
    def namespace(self) -> str:
        """The namespace methods work in unless told another."""
        return self.connection.namespace or "default"

    @cached_property
    def kubernetes_hook(self) -> KubernetesHook:
        """The cncf-kubernetes hook this hook is built on (importing it imports the ``kubernetes`` client)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(**self.connection.hook_kwargs())

    def get_conn(self) -> Any:
        """The ``CustomObjectsApi`` client of the cluster."""
        return self.kubernetes_hook.custom_object_client

    def test_connection(self) -> tuple[bool, str]:
        """Whether the cluster answers and serves the ``InferenceService`` API (lists them in the namespace)."""
        try:
            self.get_conn().list_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, limit=1)
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        return True, f"Listed InferenceServices in namespace {self.namespace}"

    def get_inference_service(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The ``InferenceService`` *name*, or ``None`` if it does not exist."""
        from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

        try:
            return self.get_conn().get_namespaced_custom_object(
                GROUP, API_VERSION, namespace or self.namespace, PLURAL, name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create_inference_service(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the resource of *manifest* (in its ``metadata.namespace``, else the hook's namespace)."""
        namespace = (manifest.get("metadata") or {}).get("namespace") or self.namespace
        return self.get_conn().create_namespaced_custom_object(
            GROUP, API_VERSION, namespace, PLURAL, manifest
        )

    def patch_inference_service(
        self, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Apply the JSON merge patch *patch* to ``InferenceService`` *name*."""
        return self.get_conn().patch_namespaced_custom_object(
            GROUP, API_VERSION, namespace or self.namespace, PLURAL, name, patch
        )

    def delete_inference_service(self, name: str, namespace: str | None = None) -> bool:
        """Delete ``InferenceService`` *name*; return whether it existed."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.get_conn().delete_namespaced_custom_object(
                GROUP, API_VERSION, namespace or self.namespace, PLURAL, name
            )
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def get_state(
        self, name: str, min_generation: int | None = None, namespace: str | None = None
    ) -> tuple[str, str, dict[str, Any] | None]:
        """
        Read ``InferenceService`` *name* and judge it: ``(state, message, resource)``.

        *state* is :func:`inference_service_state`'s, or ``"missing"`` (with resource ``None``).
        """
        obj = self.get_inference_service(name, namespace)
        if obj is None:
            return "missing", f"InferenceService {namespace or self.namespace}/{name} does not exist", None
        state, message = inference_service_state(obj, min_generation)
        return state, message, obj


class AsyncKServeHook(KServeHook):
    """
    :class:`KServeHook`'s reads with the async Kubernetes client, for triggers (on ``AsyncKubernetesHook``).

    Takes the same arguments as :class:`KServeHook`.
    """

    @cached_property
    def async_kubernetes_hook(self) -> AsyncKubernetesHook:
        """The cncf-kubernetes async hook this hook is built on."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

        return AsyncKubernetesHook(**self.connection.hook_kwargs())

    @asynccontextmanager
    async def aget_conn(self) -> AsyncIterator[Any]:
        """
        An async ``ApiClient`` of the cluster.

        ``AsyncKubernetesHook`` ignores its ``config_file`` argument (only the connection's
        ``kube_config_path`` counts), so a ``config_file`` of the connection description is loaded here, as
        ``KubernetesHook`` would: the file wins over the connection's kubeconfig.
        """
        if self.connection.config_file and not self.connection.in_cluster:
            from kubernetes_asyncio import client, config

            configuration = client.Configuration()
            await config.load_kube_config(
                config_file=self.connection.config_file,
                context=self.connection.cluster_context,
                client_configuration=configuration,
            )
            async with client.ApiClient(configuration) as api_client:
                yield api_client
            return
        async with self.async_kubernetes_hook.get_conn() as api_client:
            yield api_client

    async def aget_inference_service(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The ``InferenceService`` *name*, or ``None`` if it does not exist."""
        from kubernetes_asyncio.client import CustomObjectsApi
        from kubernetes_asyncio.client.exceptions import ApiException

        async with self.aget_conn() as api_client:
            try:
                return await CustomObjectsApi(api_client).get_namespaced_custom_object(
                    GROUP, API_VERSION, namespace or self.namespace, PLURAL, name
                )
            except ApiException as err:
                if err.status == 404:
                    return None
                raise

    async def aget_state(
        self, name: str, min_generation: int | None = None, namespace: str | None = None
    ) -> tuple[str, str, dict[str, Any] | None]:
        """The async :meth:`KServeHook.get_state`."""
        obj = await self.aget_inference_service(name, namespace)
        if obj is None:
            return "missing", f"InferenceService {namespace or self.namespace}/{name} does not exist", None
        state, message = inference_service_state(obj, min_generation)
        return state, message, obj
