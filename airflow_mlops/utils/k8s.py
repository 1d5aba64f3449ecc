"""
Kubernetes names and the one description of how to reach a cluster.

:class:`KubernetesConnection` is shared by the training runtime, its trigger, the KServe target and its
trigger, so each of them reaches the same cluster the same way (connection, kubeconfig file and context, or
the in-cluster configuration).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

LABEL_VALUE_MAX = 63


def label_value(value: object) -> str:
    """
    *value* as a valid Kubernetes label value (63 characters of ``[A-Za-z0-9_.-]``, alphanumeric ends).

    Invalid characters become ``_``; a value that had to change, or is too long, gets a short hash of the
    original, so two different values never share a label.
    """
    text = str(value)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("_.-")
    if safe == text and len(safe) <= LABEL_VALUE_MAX:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    head = safe[: LABEL_VALUE_MAX - len(digest) - 1].rstrip("_.-")
    return f"{head}-{digest}" if head else digest


@dataclass(frozen=True)
class KubernetesConnection:
    """
    How to reach a Kubernetes cluster, as the cncf-kubernetes hooks take it.

    :param conn_id: Airflow ``kubernetes`` connection (``None``: the hook's defaults).
    :param namespace: Namespace to work in (``None``: the connection's, else ``default``).
    :param config_file: Kubeconfig path, if not the connection's.
    :param cluster_context: Kubeconfig context.
    :param in_cluster: Use the in-cluster configuration.
    """

    conn_id: str | None = "kubernetes_default"
    namespace: str | None = None
    config_file: str | None = None
    cluster_context: str | None = None
    in_cluster: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for trigger arguments."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> KubernetesConnection:
        """The inverse of :meth:`to_dict`; ``None`` gives the defaults."""
        return cls(**dict(data or {}))

    def kserve_hook_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~airflow_mlops.hooks.kserve.KServeHook` (and its async twin)."""
        return {
            "kubernetes_conn_id": self.conn_id,
            "namespace": self.namespace,
            "config_file": self.config_file,
            "cluster_context": self.cluster_context,
            "in_cluster": self.in_cluster,
        }

    def hook_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``KubernetesHook`` / ``AsyncKubernetesHook``."""
        return {
            "conn_id": self.conn_id,
            "config_file": self.config_file,
            "cluster_context": self.cluster_context,
            "in_cluster": self.in_cluster,
        }
