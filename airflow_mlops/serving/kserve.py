"""
Deploy target for KServe ``InferenceService`` resources on Kubernetes (the production setting).

The target writes one ``InferenceService`` per registered model (``serving.kserve.io/v1beta1``), created the
first time and merge-patched afterwards, through the cncf-kubernetes provider's ``KubernetesHook`` (an Airflow
``kubernetes`` connection). The predictor serves the MLflow model format (MLServer's MLflow runtime) from the
``storageUri`` of the registry version's artifact location, or runs a custom predictor image that receives the
same URI as ``STORAGE_URI``. Readiness is the resource's ``Ready`` condition for the latest generation; the
deferrable wait is :class:`~airflow_mlops.triggers.kserve.KServeInferenceServiceReadyTrigger`.

The resource carries annotations naming the model, version and URI, so :meth:`KServeTarget.current` reads what
serves from the cluster itself.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow_mlops.exceptions import ConfigurationError, DeploymentError, DeploymentRejectedError
from airflow_mlops.hooks.kserve import (
    API_VERSION,
    FAILED_REASONS,
    GROUP,
    KIND,
    PLURAL,
    KServeHook,
    api_error_is_retryable,
    describe_conditions,
    inference_service_state,
)
from airflow_mlops.registry import validate_model_name
from airflow_mlops.serving.base import DeployTarget, post_invocations
from airflow_mlops.serving.capture import TRAFFIC_HEADER
from airflow_mlops.serving.capture_receiver import logger_key
from airflow_mlops.serving.status import Deployment, Health
from airflow_mlops.utils.k8s import KubernetesConnection, label_value
from airflow_mlops.utils.urls import without_credentials

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.triggers.kserve import KServeInferenceServiceReadyTrigger

__all__ = [
    "API_VERSION",
    "FAILED_REASONS",
    "GROUP",
    "KIND",
    "PLURAL",
    "KServeTarget",
    "inference_service_state",
    "merge_patch",
    "service_name_for",
]

ANNOTATION_MODEL = "airflow-mlops/model-name"
ANNOTATION_VERSION = "airflow-mlops/model-version"
ANNOTATION_URI = "airflow-mlops/model-uri"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "airflow-mlops"
LABEL_MODEL = "airflow-mlops/model"

#: URI schemes KServe's storage initializer downloads from.
STORAGE_SCHEMES = (
    "s3://",
    "gs://",
    "https://",
    "http://",
    "pvc://",
    "hdfs://",
    "webhdfs://",
    "oci://",
    "hf://",
)
#: Annotation asking KServe for ``latest-``/``prev-`` tagged URLs of the revisions (used to reach a canary).
ANNOTATION_TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
_NAME_MAX = 45  # KServe derives longer names (e.g. "<name>-predictor-00001-deployment") from it
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def service_name_for(model_name: str) -> str:
    """A valid ``InferenceService`` name (DNS-1035 label, at most 45 characters) derived from a model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}".rstrip("-")
    return name[:_NAME_MAX].rstrip("-")


def merge_patch(old: Any, new: Any) -> Any:
    """
    The JSON merge patch (RFC 7386) that turns *old* into *new*: changed keys, and ``None`` for removed ones.

    Returns ``{}`` when nothing differs.
    """
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return copy.deepcopy(new)
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key in old and isinstance(old[key], Mapping) and isinstance(value, Mapping):
            sub = merge_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif key not in old or old[key] != value:
            patch[key] = copy.deepcopy(value)
    return patch


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


class KServeTarget(DeployTarget):
    """
    Serve registered model versions as a KServe ``InferenceService`` (``serving.kserve.io/v1beta1``).

    :param namespace: Namespace of the ``InferenceService``.
    :param kubernetes_conn_id: Airflow ``kubernetes`` connection (cncf-kubernetes provider).
    :param config_file: Kubeconfig path, if not the connection's.
    :param cluster_context: Kubeconfig context.
    :param in_cluster: Use the in-cluster configuration.
    :param service_name: Name of the ``InferenceService``; default derived from the model name.
    :param model_format: ``spec.predictor.model.modelFormat.name`` (``mlflow`` by default).
    :param protocol_version: Inference protocol of the predictor (``v2`` for MLServer's MLflow runtime).
    :param runtime: A ``ServingRuntime`` name to pin; None lets KServe pick one for the format.
    :param image: A custom predictor image instead of a serving runtime; it gets the model location as
        ``STORAGE_URI`` (KServe downloads it to ``/mnt/models``) and must answer ``/invocations``.
    :param resources: Container resources, ``{"requests": {...}, "limits": {...}}``.
    :param gpus: GPUs per replica (added to the limits as *gpu_resource*).
    :param gpu_resource: Extended resource name of a GPU.
    :param canary_traffic_percent: Percent of traffic a new version gets first (KServe canary rollout,
        ``canaryTrafficPercent``) while ``DeployModelOperator`` bakes it; then it is promoted to 100% or rolled
        back. None (or no version serving yet) sends all traffic to it once ready. A rollback always sends all
        traffic to the version it restores.
    :param min_replicas: ``spec.predictor.minReplicas``.
    :param max_replicas: ``spec.predictor.maxReplicas``.
    :param service_account_name: Service account of the predictor (e.g. the one holding the S3 secret).
    :param labels: Extra labels of the ``InferenceService``.
    :param annotations: Extra annotations (e.g. ``{"serving.kserve.io/deploymentMode": "RawDeployment"}``).
    :param predictor_overrides: Merged into ``spec.predictor`` last (tolerations, nodeSelector...).
    :param storage_uri_map: Prefix rewrites from the registry's artifact locations to URIs the cluster can
        read, e.g. ``{"mlflow-artifacts:/": "s3://mlflow/artifacts/"}`` for an MLflow server proxying S3.
    :param endpoint_url: Base URL the smoke test calls, ``{name}`` and ``{namespace}`` filled in; default
        the resource's ``status.url``.
    :param poll_interval: Seconds between status reads while waiting for ``Ready``.
    :param capture_logger: Capture every prediction with KServe's own request/response logger
        (``spec.predictor.logger``): ``{"url": "http://mlops-capture.monitoring:8080", "mode": "all"}``. The
        logger posts each request and answer as CloudEvents to the receiver
        (:mod:`airflow_mlops.serving.capture_receiver`), which lands them in the local target's capture layout;
        the target adds ``?model=<name>&version=<version>`` to the URL so each revision says what it serves.
        ``"token_conn_id"`` names the Airflow connection whose password is the receiver's token (the same
        value as the receiver's ``MLOPS_CAPTURE_TOKEN`` Secret): the URL then also carries ``key=``, an HMAC of
        the model version under that token, which lets the logger write that version's traffic and nothing
        else. ``"traffic_header": True`` forwards ``X-MLOps-Traffic`` (``metadataHeaders``, KServe 0.13+), so
        smoke tests and canary probes are stored apart from production traffic.
    """

    kind = "kserve"

    def __init__(
        self,
        *,
        namespace: str = "default",
        kubernetes_conn_id: str = "kubernetes_default",
        config_file: str | None = None,
        cluster_context: str | None = None,
        in_cluster: bool | None = None,
        service_name: str | None = None,
        model_format: str = "mlflow",
        protocol_version: str | None = "v2",
        runtime: str | None = None,
        image: str | None = None,
        resources: dict[str, Any] | None = None,
        gpus: int = 0,
        gpu_resource: str = "nvidia.com/gpu",
        canary_traffic_percent: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        service_account_name: str | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        predictor_overrides: dict[str, Any] | None = None,
        storage_uri_map: dict[str, str] | None = None,
        endpoint_url: str | None = None,
        poll_interval: float = 10.0,
        capture_logger: dict[str, Any] | None = None,
    ) -> None:
        if capture_logger is not None:
            if not isinstance(capture_logger, dict) or set(capture_logger) - {
                "url", "mode", "token_conn_id", "traffic_header"
            }:
                raise ValueError(
                    "capture_logger must be a dict with 'url' (and 'mode', 'token_conn_id', 'traffic_header'), "
                    f"got {capture_logger!r}"
                )
            token_conn_id = capture_logger.get("token_conn_id")
            if token_conn_id is not None and (not isinstance(token_conn_id, str) or not token_conn_id):
                raise ValueError(f"capture_logger['token_conn_id'] must be a connection id, got {token_conn_id!r}")
            if not isinstance(capture_logger.get("traffic_header", False), bool):
                raise ValueError("capture_logger['traffic_header'] must be True or False")
            url, mode = capture_logger.get("url"), capture_logger.get("mode", "all")
            if (
                not isinstance(url, str)
                or not url.startswith(("http://", "https://"))
                or without_credentials(url) != url
                or "?" in url
            ):
                raise ValueError(
                    f"capture_logger['url'] must be the receiver's http(s) URL without credentials or query, got {url!r}"
                )
            if mode not in ("all", "request", "response"):
                raise ValueError(
                    f"capture_logger['mode'] must be 'all', 'request' or 'response', got {mode!r}"
                )
        if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace.replace("_", "-")):
            raise ValueError(f"namespace must be a Kubernetes namespace name, got {namespace!r}")
        if service_name is not None and (
            not isinstance(service_name, str)
            or not _DNS_LABEL.match(service_name)
            or len(service_name) > _NAME_MAX
        ):
            raise ValueError(
                f"service_name must be a DNS-1035 label of at most {_NAME_MAX} characters "
                f"(lowercase letters, digits, '-', starting with a letter), got {service_name!r}"
            )
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"gpus must be a non-negative integer, got {gpus!r}")
        if canary_traffic_percent is not None and (
            isinstance(canary_traffic_percent, bool)
            or not isinstance(canary_traffic_percent, int)
            or not 0 <= canary_traffic_percent <= 100
        ):
            raise ValueError(
                f"canary_traffic_percent must be an integer from 0 to 100 or None, got {canary_traffic_percent!r}"
            )
        for field_name, value in (("min_replicas", min_replicas), ("max_replicas", max_replicas)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{field_name} must be a non-negative integer or None, got {value!r}")
        mappings: tuple[tuple[str, Any], ...] = (
            ("resources", resources),
            ("labels", labels),
            ("annotations", annotations),
            ("predictor_overrides", predictor_overrides),
            ("storage_uri_map", storage_uri_map),
        )
        for field_name, mapping in mappings:
            if mapping is not None and not isinstance(mapping, dict):
                raise ValueError(f"{field_name} must be a dict or None, got {type(mapping).__name__}")
        if resources and set(resources) - {"requests", "limits", "claims"}:
            raise ValueError(f"resources takes 'requests' and 'limits', got {sorted(resources)}")
        if not model_format and not image:
            raise ValueError("Give model_format (e.g. 'mlflow') or a custom predictor image")
        if not isinstance(poll_interval, int | float) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        if endpoint_url is not None and (
            not isinstance(endpoint_url, str) or without_credentials(endpoint_url) != endpoint_url
        ):
            raise ValueError(
                "endpoint_url of the KServe target must be a URL like 'http://{name}.{namespace}.example.com' "
                "without credentials (user:password@): the smoke test sends no credentials, and the URL is "
                "shown in logs and the deployment history"
            )
        if in_cluster is not None and not isinstance(in_cluster, bool):
            raise ValueError(f"in_cluster must be true, false or None, got {in_cluster!r}")
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.config_file = config_file
        self.cluster_context = cluster_context
        self.in_cluster = in_cluster
        self.service_name = service_name
        self.model_format = model_format
        self.protocol_version = protocol_version
        self.runtime = runtime
        self.image = image
        self.resources = resources
        self.gpus = gpus
        self.gpu_resource = gpu_resource
        self.canary_traffic_percent = canary_traffic_percent
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.service_account_name = service_account_name
        self.labels = labels
        self.annotations = annotations
        self.predictor_overrides = predictor_overrides
        self.storage_uri_map = storage_uri_map
        self.endpoint_url = endpoint_url
        self.poll_interval = float(poll_interval)
        self.capture_logger = capture_logger

    def settings(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "kubernetes_conn_id": self.kubernetes_conn_id,
            "config_file": self.config_file,
            "cluster_context": self.cluster_context,
            "in_cluster": self.in_cluster,
            "service_name": self.service_name,
            "model_format": self.model_format,
            "protocol_version": self.protocol_version,
            "runtime": self.runtime,
            "image": self.image,
            "resources": self.resources,
            "gpus": self.gpus,
            "gpu_resource": self.gpu_resource,
            "canary_traffic_percent": self.canary_traffic_percent,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "service_account_name": self.service_account_name,
            "labels": self.labels,
            "annotations": self.annotations,
            "predictor_overrides": self.predictor_overrides,
            "storage_uri_map": self.storage_uri_map,
            "endpoint_url": self.endpoint_url,
            "poll_interval": self.poll_interval,
            "capture_logger": self.capture_logger,
        }

    # -- manifests -----------------------------------------------------------------------------------------

    def _capture_key(self, model_name: str, version: str) -> str:
        """The capture receiver's key for one model version, from the token connection (masked in logs)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.log import mask_secret

        from airflow_mlops.version_compat import AirflowNotFoundException

        conn_id = str(self.capture_logger["token_conn_id"])  # type: ignore[index]
        try:
            token = BaseHook.get_connection(conn_id).password or ""
        except AirflowNotFoundException:
            token = ""
        if not token:
            raise ConfigurationError(
                f"capture_logger['token_conn_id']: the Airflow connection {conn_id!r} is missing or has no "
                "password; set its password to the capture receiver's token (its MLOPS_CAPTURE_TOKEN Secret)"
            )
        key = logger_key(token, model_name, version)
        mask_secret(key)
        return key

    def name_for(self, model_name: str) -> str:
        """Name of the model's ``InferenceService``."""
        return self.service_name or service_name_for(validate_model_name(model_name))

    def storage_uri(self, artifact_uri: str) -> str:
        """*artifact_uri* rewritten through ``storage_uri_map``; raise if KServe cannot download from it."""
        uri = artifact_uri
        for prefix, replacement in sorted((self.storage_uri_map or {}).items(), key=lambda kv: -len(kv[0])):
            if uri.startswith(prefix):
                uri = replacement + uri[len(prefix) :]
                break
        if not uri.startswith(STORAGE_SCHEMES):
            raise DeploymentRejectedError(
                f"KServe cannot download the model from {artifact_uri!r}: its storage initializer reads "
                f"{', '.join(STORAGE_SCHEMES)}. Store MLflow artifacts in such a store, or map the prefix "
                "with storage_uri_map (e.g. {'mlflow-artifacts:/': 's3://<bucket>/<artifacts-prefix>/'}).",
                uri=artifact_uri,
            )
        return uri

    def resolve_model_uri(self, client: MlflowClient, model_name: str, version: str) -> str:
        """The registry version's artifact location, as a ``storageUri`` the cluster can read."""
        return self.storage_uri(client.get_model_version_download_uri(model_name, str(version)))

    def _resources(self) -> dict[str, Any] | None:
        resources = copy.deepcopy(self.resources) or {}
        if self.gpus:
            resources.setdefault("limits", {})[self.gpu_resource] = str(self.gpus)
        return resources or None

    def build_manifest(
        self,
        model_name: str,
        version: str,
        storage_uri: str,
        *,
        name: str | None = None,
        canary_traffic_percent: int | None = None,
    ) -> dict[str, Any]:
        """The ``InferenceService`` serving *version* of *model_name* from *storage_uri*."""
        name = name or self.name_for(model_name)
        resources = self._resources()
        predictor: dict[str, Any] = {}
        if self.image:
            container: dict[str, Any] = {
                "name": "kserve-container",
                "image": self.image,
                "env": [
                    {"name": "STORAGE_URI", "value": storage_uri},
                    {"name": "MLOPS_MODEL_NAME", "value": model_name},
                    {"name": "MLOPS_MODEL_VERSION", "value": str(version)},
                ],
            }
            if resources:
                container["resources"] = resources
            predictor["containers"] = [container]
        else:
            model: dict[str, Any] = {"modelFormat": {"name": self.model_format}, "storageUri": storage_uri}
            if self.protocol_version:
                model["protocolVersion"] = self.protocol_version
            if self.runtime:
                model["runtime"] = self.runtime
            if resources:
                model["resources"] = resources
            predictor["model"] = model
        if self.min_replicas is not None:
            predictor["minReplicas"] = self.min_replicas
        if self.max_replicas is not None:
            predictor["maxReplicas"] = self.max_replicas
        if self.service_account_name:
            predictor["serviceAccountName"] = self.service_account_name
        if canary_traffic_percent is not None:
            predictor["canaryTrafficPercent"] = canary_traffic_percent
        if self.capture_logger:
            params = {"model": model_name, "version": str(version)}
            if self.capture_logger.get("token_conn_id"):
                params["key"] = self._capture_key(model_name, str(version))
            predictor["logger"] = {
                "mode": self.capture_logger.get("mode", "all"),
                "url": f"{self.capture_logger['url']}?{urlencode(params)}",
            }
            if self.capture_logger.get("traffic_header"):
                predictor["logger"]["metadataHeaders"] = [TRAFFIC_HEADER]
        if self.predictor_overrides:
            _deep_merge(predictor, self.predictor_overrides)
        return {
            "apiVersion": f"{GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {
                    **(self.labels or {}),
                    LABEL_MANAGED_BY: MANAGED_BY,
                    LABEL_MODEL: label_value(model_name),
                },
                "annotations": {
                    **(self.annotations or {}),
                    ANNOTATION_MODEL: model_name,
                    ANNOTATION_VERSION: str(version),
                    ANNOTATION_URI: storage_uri,
                },
            },
            "spec": {"predictor": predictor},
        }

    # -- Kubernetes API (through the KServe hook) -----------------------------------------------------------

    @property
    def connection(self) -> KubernetesConnection:
        """How this target reaches its cluster; the trigger of its deferrable wait gets the same."""
        return KubernetesConnection(
            conn_id=self.kubernetes_conn_id,
            namespace=self.namespace,
            config_file=self.config_file,
            cluster_context=self.cluster_context,
            in_cluster=self.in_cluster,
        )

    @cached_property
    def hook(self) -> KServeHook:
        """The KServe hook of this target's cluster (it imports the kubernetes client when first used)."""
        return KServeHook(**self.connection.kserve_hook_kwargs())

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, model: str | None = None) -> Any:
        """
        Run a hook call, turning API errors into deployment errors.

        :class:`DeploymentError` (retryable) for 5xx, 408, 409, 429 and network errors;
        :class:`DeploymentRejectedError` (not retryable) for any other 4xx, e.g. a spec the API server rejects.
        """
        from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args)
        except ApiException as err:
            error = DeploymentError if api_error_is_retryable(err.status) else DeploymentRejectedError
            raise error(
                f"Kubernetes API refused to {what} (connection {self.kubernetes_conn_id!r}): HTTP {err.status} "
                f"{err.reason}: {(err.body or '')[:1000]}",
                model=model,
            ) from err
        except HTTPError as err:
            raise DeploymentError(
                f"Kubernetes API unreachable while trying to {what} (connection {self.kubernetes_conn_id!r}): {err}",
                model=model,
            ) from err

    def get(self, name: str) -> dict[str, Any] | None:
        """The ``InferenceService`` *name* in the target's namespace, or None."""
        return self._call(
            f"read InferenceService {self.namespace}/{name}", self.hook.get_inference_service, name
        )

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the ``InferenceService`` of *manifest*, or merge-patch the existing one to match it."""
        name = manifest["metadata"]["name"]
        model = manifest["metadata"]["annotations"].get(ANNOTATION_MODEL)
        existing = self.get(name)
        if existing is None:
            return self._call(
                f"create InferenceService {self.namespace}/{name}",
                self.hook.create_inference_service, manifest, model=model,
            )  # fmt: skip
        patch: dict[str, Any] = {}
        spec_patch = merge_patch(existing.get("spec") or {}, manifest["spec"])
        if spec_patch:
            patch["spec"] = spec_patch
        meta = existing.get("metadata") or {}
        for key in ("labels", "annotations"):
            wanted = manifest["metadata"][key]
            if any((meta.get(key) or {}).get(k) != v for k, v in wanted.items()):
                patch.setdefault("metadata", {})[key] = wanted
        if not patch:
            return existing
        return self._call(
            f"patch InferenceService {self.namespace}/{name}",
            self.hook.patch_inference_service, name, patch, model=model,
        )  # fmt: skip

    def delete(self, name: str) -> None:
        """Delete the ``InferenceService`` *name* (no error if it does not exist)."""
        self._call(
            f"delete InferenceService {self.namespace}/{name}", self.hook.delete_inference_service, name
        )

    def _to_deployment(self, obj: Mapping[str, Any], model_name: str) -> Deployment:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        generation = meta.get("generation")
        state, message = inference_service_state(obj, generation)
        url = (obj.get("status") or {}).get("url") or ""
        name = meta.get("name")
        endpoint = self.endpoint_url.format(name=name, namespace=self.namespace) if self.endpoint_url else url
        predictor_status = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
        canary_url = next(
            (
                t.get("url")
                for t in predictor_status.get("traffic") or []
                if isinstance(t, Mapping) and t.get("tag") == "latest" and t.get("url")
            ),
            None,
        )
        ready_time = next(
            (
                c.get("lastTransitionTime")
                for c in (obj.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready" and c.get("status") == "True"
            ),
            None,
        )
        return Deployment(
            model_name=annotations.get(ANNOTATION_MODEL, model_name),
            version=str(annotations.get(ANNOTATION_VERSION, "")),
            model_uri=annotations.get(ANNOTATION_URI, ""),
            target=self.config_kind(),
            endpoint=endpoint,
            deployed_at=ready_time or meta.get("creationTimestamp") or "",
            ready=state == "ready",
            details={
                "name": name,
                "namespace": self.namespace,
                "generation": generation,
                "state": state,
                "message": message,
                "canary_traffic_percent": ((obj.get("spec") or {}).get("predictor") or {}).get(
                    "canaryTrafficPercent"
                ),
                "canary_url": canary_url,
            },
        )

    # -- DeployTarget --------------------------------------------------------------------------------------

    def deploy(self, model_name: str, version: str, model_uri: str) -> Deployment:
        """Serve *version* with all traffic (a canary rollout is :meth:`deploy_canary`)."""
        manifest = self.build_manifest(model_name, str(version), self.storage_uri(model_uri))
        return self._to_deployment(self.apply(manifest), model_name)

    # -- canary rollout ------------------------------------------------------------------------------------

    supports_canary = True

    def canary_percent(self) -> int | None:
        return self.canary_traffic_percent

    def deploy_canary(self, model_name: str, version: str, model_uri: str, percent: int) -> Deployment:
        """A new revision serving *version* with ``canaryTrafficPercent: percent``; the previous one keeps the rest."""
        manifest = self.build_manifest(
            model_name, str(version), self.storage_uri(model_uri), canary_traffic_percent=percent
        )
        manifest["metadata"]["annotations"][ANNOTATION_TAG_ROUTING] = "true"
        return self._to_deployment(self.apply(manifest), model_name)

    def canary_endpoint(self, deployment: Deployment) -> str:
        """
        The canary revision's own URL (KServe's ``latest`` traffic tag, from tag routing).

        Else the shared endpoint (``endpoint_url`` set, or no tag URL in the status): then the bake measures
        all traffic.
        """
        if self.endpoint_url:
            return deployment.endpoint
        return deployment.details.get("canary_url") or deployment.endpoint

    def predict_canary(self, deployment: Deployment, records: Any, timeout: float = 30.0) -> list[Any]:
        endpoint = self.canary_endpoint(deployment)
        if not endpoint:
            return self.predict(deployment, records, timeout=timeout)  # raises: no URL
        return post_invocations(endpoint, records, timeout=timeout)

    def promote_canary(self, model_name: str, deployment: Deployment) -> Deployment:
        """All traffic to the canary: the spec without ``canaryTrafficPercent`` (KServe rolls it out at 100%)."""
        manifest = self.build_manifest(model_name, deployment.version, self.storage_uri(deployment.model_uri))
        manifest["metadata"]["annotations"][ANNOTATION_TAG_ROUTING] = "true"
        return self._to_deployment(self.apply(manifest), model_name)

    def rollback(self, model_name: str, to: Deployment) -> Deployment:
        manifest = self.build_manifest(model_name, to.version, self.storage_uri(to.model_uri))
        return self._to_deployment(self.apply(manifest), model_name)

    def current(self, model_name: str) -> Deployment | None:
        obj = self.get(self.name_for(model_name))
        if obj is None or not (obj.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_VERSION):
            return None
        return self._to_deployment(obj, model_name)

    def stop(self, model_name: str) -> None:
        self.delete(self.name_for(model_name))

    def wait_ready(self, deployment: Deployment, timeout: float) -> Deployment:
        """
        Poll until the generation written is Ready.

        :raises DeploymentRejectedError: KServe reports the rollout failed (a failed revision, a model that
            failed to load, an invalid predictor spec): not retryable.
        :raises DeploymentError: the resource disappeared, or was not Ready in time (retryable).
        """
        name, generation = deployment.details["name"], deployment.details.get("generation")
        fields = {"model": deployment.model_name, "version": deployment.version}
        where = f"InferenceService {self.namespace}/{name}"
        deadline = time.monotonic() + timeout
        while True:
            state, message, obj = self._call(f"read {where}", self.hook.get_state, name, generation)
            if obj is None:
                raise DeploymentError(f"{where} disappeared while rolling out", **fields)
            if state == "ready":
                return self._to_deployment(obj, deployment.model_name)
            if state == "failed":
                raise DeploymentRejectedError(
                    f"{where} (model {deployment.model_name!r} version {deployment.version}) failed to roll "
                    f"out: {message}",
                    reason=message,
                    **fields,
                )
            if time.monotonic() + self.poll_interval > deadline:
                raise DeploymentError(
                    f"{where} (model {deployment.model_name!r} version {deployment.version}) was not Ready "
                    f"within {timeout:.0f}s: {message}",
                    **fields,
                )
            time.sleep(self.poll_interval)

    def ready_trigger(self, deployment: Deployment, timeout: float) -> KServeInferenceServiceReadyTrigger:
        from airflow_mlops.triggers.kserve import KServeInferenceServiceReadyTrigger

        return KServeInferenceServiceReadyTrigger(
            name=deployment.details["name"],
            connection=self.connection.to_dict(),
            min_generation=deployment.details.get("generation"),
            deadline=time.time() + timeout,
            poll_interval=self.poll_interval,
        )

    def health(self, deployment: Deployment, timeout: float = 10.0) -> Health:
        name = deployment.details.get("name") or self.name_for(deployment.model_name)
        obj = self.get(name)
        if obj is None:
            return Health(False, f"InferenceService {self.namespace}/{name} does not exist")
        served = (obj.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_VERSION)
        state, message = inference_service_state(obj, (obj.get("metadata") or {}).get("generation"))
        if state != "ready":
            return Health(False, f"InferenceService {self.namespace}/{name} is {state}: {message}")
        if deployment.version and served != deployment.version:
            return Health(
                False,
                f"InferenceService {self.namespace}/{name} serves version {served}, not {deployment.version}",
            )
        return Health(True, f"InferenceService {self.namespace}/{name} is Ready at {message}")

    def predict(self, deployment: Deployment, records: Any, timeout: float = 30.0) -> list[Any]:
        if not deployment.endpoint:
            raise DeploymentError(
                f"InferenceService {self.namespace}/{deployment.details.get('name')} has no URL to send requests "
                "to; set endpoint_url in the KServe target's settings",
                model=deployment.model_name,
                version=deployment.version,
            )
        return post_invocations(deployment.endpoint, records, timeout=timeout)

    def diagnostics(self, deployment: Deployment) -> str:
        name = deployment.details.get("name")
        obj = self.get(name) if name else None
        if obj is None:
            return ""
        return f"InferenceService {self.namespace}/{name}: {describe_conditions(obj)}"

    def start_sandbox(self, model_name: str, version: str, model_uri: str) -> Deployment:
        """A separate ``InferenceService`` (``<name>-infraval``, one replica) that no client calls."""
        name = f"{self.name_for(model_name)[: _NAME_MAX - 9]}-infraval"
        manifest = self.build_manifest(model_name, str(version), self.storage_uri(model_uri), name=name)
        manifest["spec"]["predictor"].update({"minReplicas": 1, "maxReplicas": 1})
        manifest["metadata"]["labels"]["airflow-mlops/role"] = "infra-validation"
        deployment = self._to_deployment(self.apply(manifest), model_name)
        try:
            return self.wait_ready(deployment, timeout=max(self.poll_interval * 60, 600.0))
        except BaseException:
            self.delete(name)
            raise

    def stop_sandbox(self, deployment: Deployment) -> None:
        self.delete(deployment.details["name"])
