"""
The small named parts a :class:`~airflow_mlops.training.kubernetes.runtime.KubernetesRuntime` is built from.

Each part is a frozen value; :meth:`problems` lists what is wrong with it (the runtime gathers them into one
``ValueError``). The cluster itself is described by :class:`airflow_mlops.utils.k8s.KubernetesConnection`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
TOLERATION_KEYS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
#: Node label the NVIDIA GPU feature discovery sets to the GPU model (e.g. ``NVIDIA-H100-80GB-HBM3``).
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def label_key_ok(key: str) -> bool:
    """Whether *key* is a valid label (or annotation) key: ``[prefix/]name``."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(LABEL_NAME.match(name))


def label_value_ok(value: Any) -> bool:
    """Whether *value* is a valid label value."""
    return isinstance(value, str) and len(value) <= 63 and bool(LABEL_VALUE.match(value))


def object_name_ok(value: Any) -> bool:
    """Whether *value* is a valid Kubernetes object name (a lower-case DNS subdomain)."""
    return isinstance(value, str) and len(value) <= 253 and bool(DNS_SUBDOMAIN.match(value))


def _short_repr(part: Any) -> str:
    """``Part(a=1)``: only the fields that differ from their defaults (deterministic, for DAG serialization)."""
    shown = []
    for item in fields(part):
        value = getattr(part, item.name)
        default = item.default_factory() if callable(item.default_factory) else item.default
        if value != default:
            shown.append(f"{item.name}={value!r}")
    return f"{type(part).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class Resources:
    """
    CPU and memory of each training pod.

    :param cpu: CPU request (``"4"``, ``"500m"``).
    :param memory: Memory request (``"16Gi"``); also the memory limit unless ``memory_limit`` is given.
    :param cpu_limit: CPU limit (none by default: CPU limits throttle data loading).
    :param memory_limit: Memory limit; default ``memory``. The ``/dev/shm`` volume counts towards it.
    :param shm_size: Size of the memory-backed ``emptyDir`` mounted on ``/dev/shm`` (PyTorch data loader
        workers and NCCL use shared memory; the container runtime's default is 64 MiB). None: no volume.
    """

    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    shm_size: str | None = "1Gi"

    def __repr__(self) -> str:
        return _short_repr(self)

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty when nothing is)."""
        return [
            f"{name} must be a Kubernetes quantity like '4', '500m', '16Gi' or None, got {value!r}"
            for name in ("cpu", "memory", "cpu_limit", "memory_limit", "shm_size")
            if (value := getattr(self, name)) is not None
            and not (isinstance(value, str) and QUANTITY.match(value))
        ]

    def requirements(self, gpus: Gpus) -> dict[str, dict[str, str]]:
        """``resources`` of the trainer container: requests and limits; GPUs go in the limits."""
        requests: dict[str, str] = {}
        limits: dict[str, str] = {}
        if self.cpu:
            requests["cpu"] = self.cpu
        if self.memory:
            requests["memory"] = self.memory
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        memory_limit = self.memory_limit or self.memory
        if memory_limit:
            limits["memory"] = memory_limit
        if gpus.count:
            limits[gpus.resource] = str(gpus.count)
        out: dict[str, dict[str, str]] = {}
        if requests:
            out["requests"] = requests
        if limits:
            out["limits"] = limits
        return out


@dataclass(frozen=True, repr=False)
class Gpus:
    """
    GPUs of each training pod (each node).

    :param count: GPUs per pod, set in the container's resource limits.
    :param resource: Extended resource name of the GPUs.
    :param product: Schedule only on nodes whose ``nvidia.com/gpu.product`` label has this value
        (e.g. ``"NVIDIA-H100-80GB-HBM3"``). (templated, as the runtime's ``gpu_product``)
    :param tolerate_taint: With ``count > 0``, tolerate the usual GPU node taint (key ``resource``, any value,
        effect ``NoSchedule``).
    """

    count: int = 0
    resource: str = "nvidia.com/gpu"
    product: str | None = None
    tolerate_taint: bool = True

    def __repr__(self) -> str:
        return _short_repr(self)

    def problems(self, *, rendered: bool) -> list[str]:
        """What is wrong with these settings; before rendering, a templated ``product`` is not checked."""
        errors = []
        count_ok = isinstance(self.count, int) and not isinstance(self.count, bool) and self.count >= 0
        if not count_ok:
            errors.append(f"gpus must be an integer >= 0, got {self.count!r}")
        if not (isinstance(self.resource, str) and label_key_ok(self.resource) and "/" in self.resource):
            errors.append(
                f"gpu_resource must be an extended resource name like 'nvidia.com/gpu', got {self.resource!r}"
            )
        if self.product is not None:
            if (rendered or not is_templated(self.product)) and not (
                label_value_ok(self.product) and len(self.product) > 0
            ):
                errors.append(
                    f"gpu_product must be a node label value like 'NVIDIA-H100-80GB-HBM3', got {self.product!r}"
                )
            if not (count_ok and self.count > 0):
                errors.append("gpu_product needs gpus > 0")
        return errors


@dataclass(frozen=True, repr=False)
class Scheduling:
    """
    Where the training pods may run, and as whom.

    :param node_selector: Node labels to schedule on (the GPU product label is added from :class:`Gpus`).
    :param tolerations: Tolerations, as Kubernetes dicts (``{"key", "operator", "value", "effect"}``).
    :param affinity: The pods' ``affinity``, as a Kubernetes dict (``nodeAffinity``, ``podAntiAffinity``...).
    :param priority_class: ``priorityClassName`` of the pods.
    :param service_account: Service account of the pods (e.g. one bound to a cloud role for S3 access).
    """

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    affinity: Mapping[str, Any] | None = None
    priority_class: str | None = None
    service_account: str | None = None

    def __post_init__(self) -> None:
        # Plain containers, so equality, repr and deep copies do not depend on what the caller passed.
        object.__setattr__(self, "node_selector", dict(self.node_selector or {}))
        object.__setattr__(self, "tolerations", tuple(dict(t) for t in self.tolerations))
        if self.affinity is not None:
            object.__setattr__(self, "affinity", dict(self.affinity))

    def __repr__(self) -> str:
        return _short_repr(self)

    def problems(self, *, rendered: bool) -> list[str]:
        """What is wrong with these settings; before rendering, templated label values are not checked."""
        errors = []
        for name in ("priority_class", "service_account"):
            value = getattr(self, name)
            if value is not None and not object_name_ok(value):
                errors.append(
                    f"{name} must be a Kubernetes object name (lower-case DNS subdomain) or None, got {value!r}"
                )
        for key, value in self.node_selector.items():
            if not label_key_ok(str(key)):
                errors.append(f"node_selector key {key!r} is not a valid label key")
            if (rendered or not is_templated(value)) and not label_value_ok(value):
                errors.append(
                    f"node_selector[{key!r}] = {value!r} is not a valid label value (63 characters at most: "
                    "letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
                )
        for toleration in self.tolerations:
            if not set(toleration) <= TOLERATION_KEYS:
                errors.append(f"toleration {toleration!r} may only have the keys {sorted(TOLERATION_KEYS)}")
        if self.affinity is not None and not set(self.affinity) <= {
            "nodeAffinity",
            "podAffinity",
            "podAntiAffinity",
        }:
            errors.append(
                "affinity may only have the keys 'nodeAffinity', 'podAffinity', 'podAntiAffinity', "
                f"got {sorted(self.affinity)}"
            )
        return errors
