"""How the Kubernetes runtime reads a failed pod: one line, and an exception type saying whether to retry."""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import (
    NotRetryableError,
    TrainingError,
    TrainingImageError,
    TrainingPreemptedError,
    TrainingResourceError,
    TrainingTimeoutError,
)
from airflow_mlops.training.kubernetes.failures import explain_pod_failure
from tests.support.kubernetes_manifests import gpu_runtime


def failed_pod(**status) -> dict:
    return {
        "metadata": {"name": "train-x", "namespace": "ml"},
        "spec": {"containers": [{"name": "base", "resources": {"limits": {"memory": "8Gi"}}}],
                 "activeDeadlineSeconds": 3600},
        "status": status,
    }  # fmt: skip


def base_status(state: dict) -> list[dict]:
    return [{"name": "base", "image": "trainer:1", "state": state}]


@pytest.mark.parametrize(
    ("status", "kind", "retryable", "fragment"),
    [
        ({"phase": "Running", "containerStatuses": base_status(
            {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})},
         "oom", False, "was OOMKilled: the trainer used more memory than its limit (8Gi"),
        ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: ephemeral-storage."},
         "evicted", True, "was evicted: The node was low on resource: ephemeral-storage.; it is started again"),
        ({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                             "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]},
         "preempted", True, "evicted through the Eviction API (a node drain or an autoscaler scale-down)"),
        ({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                             "reason": "DeletionByTaintManager"}]},
         "preempted", True, "its node became unreachable"),
        ({"phase": "Pending", "containerStatuses": base_status({"waiting": {
            "reason": "CreateContainerConfigError", "message": 'secret "mlflow-auth" not found'}})},
         "config", False, "Check that every Secret and key named in secret_env / env_from_secrets exists in ml"),
        ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
          "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]},
         "unschedulable", False, "check gpu_product / node_selector against 'kubectl get nodes -L"),
        ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
          "message": "0/2 nodes are available: 2 node(s) had untolerated taint {gpu: true}."}]},
         "unschedulable", False, "add tolerations="),
        ({"phase": "Failed", "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than"},
         "deadline", False, "ran longer than the task's timeout (3600 s)"),
        ({"phase": "Failed", "containerStatuses": base_status({"terminated": {"exitCode": 143, "reason": "Error"}})},
         "stopped", True, "stopped on SIGTERM (exit code 143)"),
    ],
)  # fmt: skip
def test_failed_pods_are_explained_in_one_line(status, kind, retryable, fragment):
    failure = explain_pod_failure(failed_pod(**status), gpu_runtime(), pod_name="train-x")

    assert (failure.kind, failure.retryable) == (kind, retryable)
    assert fragment in failure.line
    assert failure.line.startswith("Training pod train-x")
    assert "\n" not in failure.line


def test_a_vanished_pod_counts_as_preempted():
    failure = explain_pod_failure(None, gpu_runtime(), pod_name="train-x")

    assert failure.retryable
    assert "disappeared before it finished" in failure.line


@pytest.mark.parametrize(
    ("status", "error_type", "retryable", "reason"),
    [
        ({"phase": "Running", "containerStatuses": base_status(
            {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})}, TrainingResourceError, False, "OOMKilled"),
        ({"phase": "Pending", "containerStatuses": base_status({"waiting": {
            "reason": "ImagePullBackOff", "message": "Back-off pulling image"}})}, TrainingImageError, False,
         "ImagePullBackOff"),
        ({"phase": "Pending", "containerStatuses": base_status({"waiting": {
            "reason": "CreateContainerConfigError", "message": "secret not found"}})}, TrainingImageError, False,
         "CreateContainerConfigError"),
        ({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                             "reason": "PreemptionByScheduler"}]}, TrainingPreemptedError, True,
         "PreemptionByScheduler"),
        ({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}, TrainingPreemptedError, True,
         "Evicted"),
        ({"phase": "Failed", "reason": "DeadlineExceeded"}, TrainingTimeoutError, True, "DeadlineExceeded"),
        ({"phase": "Failed", "containerStatuses": base_status({"terminated": {"exitCode": 3, "reason": "Error"}})},
         TrainingError, True, "Error"),
    ],
)  # fmt: skip
def test_each_failure_kind_raises_its_exception_type(status, error_type, retryable, reason):
    failure = explain_pod_failure(failed_pod(**status), gpu_runtime(), pod_name="train-x")

    error = failure.error(model="churn")

    assert type(error) is error_type
    assert error.retryable is retryable
    assert isinstance(error, NotRetryableError) is (not retryable)
    assert (error.pod, error.reason, error.model) == ("train-x", reason, "churn")
    assert str(error) == failure.line


def test_a_vanished_pod_raises_a_retryable_preemption():
    error = explain_pod_failure(None, gpu_runtime(), pod_name="train-x").error()

    assert isinstance(error, TrainingPreemptedError)
    assert error.retryable is True
