"""
Stand-ins for a Kubernetes API server, on loopback over real HTTP, split by concern.

- :mod:`.server`: the HTTP server every stand-in shares (requests, bearer token, kubeconfig, WebSocket frames);
- :mod:`.schemas`: what the API server checks (Kubernetes schemas, CRD schemas, names and labels) and merge patches;
- :mod:`.kserve`: :class:`KubeApiStub`, KServe InferenceServices (and their controller and predictor);
- :mod:`.cluster`: :class:`KubePodStub`, the training cluster, assembled from :mod:`.pods` (pods, logs, exec,
  events, services), :mod:`.workloads` (the Job, Trainer/JobSet and Kueue controllers) and :mod:`.kubelet`
  (:class:`PodScript`: what happens to each pod).
"""

from tests.support.kubernetes.cluster import KubePodStub
from tests.support.kubernetes.kserve import KubeApiStub
from tests.support.kubernetes.kubelet import PodScript
from tests.support.kubernetes.schemas import (
    apply_merge_patch,
    check_metadata,
    schema_versions,
    spec_validator,
    trainjob_validators,
    validate_object,
)

__all__ = [
    "KubeApiStub",
    "KubePodStub",
    "PodScript",
    "apply_merge_patch",
    "check_metadata",
    "schema_versions",
    "spec_validator",
    "trainjob_validators",
    "validate_object",
]
