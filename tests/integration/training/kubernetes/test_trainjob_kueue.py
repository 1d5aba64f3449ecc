"""
Kubeflow Trainer TrainJobs and Kueue queues, against the Kubernetes API-server stand-in on loopback.

The stand-in (tests/support/kubernetes/cluster.py) serves TrainJobs and JobSets as custom objects (validated against the
Kubeflow Trainer CRD schema, strict), plays the Trainer and JobSet controllers (a TrainJob becomes a JobSet of
``numNodes`` pods; its ``Created`` / ``Suspended`` / ``Complete`` / ``Failed`` conditions follow them) and plays
Kueue (suspended Jobs and TrainJobs, gated pods on a queue, admitted once the queue has quota). Everything goes
through the real kubernetes clients (sync and asyncio) and cncf-kubernetes hooks and operators over HTTP.
"""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import (
    TrainingAdmissionTimeoutError,
    TrainingPreemptedError,
    TrainingResourceError,
)
from airflow_mlops.operators.training import Resources
from airflow_mlops.trainer import contract
from airflow_mlops.triggers.training import KueueAdmissionTrigger, TrainJobTrigger
from tests.support.deferred import RUN_ID, Timing, fire, k8s_context, run_deferred
from tests.support.kubernetes import PodScript
from tests.support.kubernetes_training import operator_factory, trainer_result
from tests.support.training import runs_of

pytestmark = pytest.mark.integration

TRAINJOB = {"training_runtime": "torch-distributed", "num_nodes": 2}
PREEMPTED = {
    "reason": "",
    "message": "Preempted in order to admit critical pod",
    "disruption": "PreemptionByScheduler",
}


def rank0_result(env: dict[str, str]) -> dict | None:
    """Rank 0 (``PET_NODE_RANK``, set by the Trainer's torch runtime) writes the result; the others do not."""
    return trainer_result(env) if env["PET_NODE_RANK"] == "0" else None


def created(stub, kind: str) -> list[dict]:
    return [o for o in stub.created if o["kind"] == kind]


def env_of(trainjob: dict) -> dict[str, dict]:
    return {e["name"]: e for e in trainjob["spec"]["trainer"]["env"]}


def nothing_left(stub) -> bool:
    return (stub.live("TrainJob"), stub.live("JobSet"), stub.live("Pod")) == ([], [], [])


def test_a_trainjob_on_the_named_runtime_returns_rank_0s_result_and_is_deleted(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    stub.secrets[("ml", "mlflow-auth")] = {"token": "s3cr3t-token"}
    stub.script_pods(
        PodScript(
            logs=lambda env: [f"rank {env['PET_NODE_RANK']} of {env['PET_NNODES']}"], result=rank0_result
        )
    )
    make = operator_factory(
        snapshot, experiment, tmp_path, **TRAINJOB, gpus=2, resources=Resources(memory="32Gi"),
        secret_env={"MLFLOW_TRACKING_TOKEN": "mlflow-auth/token"},
    )  # fmt: skip
    timing = Timing()

    result = run_deferred(make, k8s_context("trainjob_dag"), timing)

    (run,) = runs_of(experiment)
    assert result["run_id"] == run.info.run_id
    assert result["checkpoint_uri"] == str(
        tmp_path / "runs" / "trainjob_dag" / RUN_ID / "train" / "checkpoints"
    )
    assert run.info.status == "FINISHED"
    (trainjob,) = created(stub, "TrainJob")
    spec = trainjob["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": "torch-distributed",
    }  # fmt: skip
    assert (spec["trainer"]["numNodes"], spec["trainer"]["numProcPerNode"]) == (2, 2)
    assert spec["trainer"]["image"] == "registry.example.com/trainer:1.0"
    assert spec["trainer"]["command"][:3] == [
        "torchrun",
        "--module",
        "airflow_mlops.trainer.examples.sklearn_classifier",
    ]
    assert spec["trainer"]["resourcesPerNode"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "2"}
    assert "suspend" not in spec  # no queue: it starts at once
    env = env_of(trainjob)
    assert env[contract.RESULT_PATH]["value"] == "/dev/termination-log"
    assert env[contract.CHECKPOINT_URI]["value"] == result["checkpoint_uri"]
    assert env["MLFLOW_TRACKING_TOKEN"] == {
        "name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {"secretKeyRef": {"name": "mlflow-auth", "key": "token"}},
    }  # fmt: skip
    assert not any(name.startswith("PET_") for name in env)  # the runtime sets the rendezvous
    assert "s3cr3t-token" not in str(trainjob)
    patch = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_patch = patch["template"]["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_patch["tolerations"]
    assert timing.deferrals == 1
    task_log = capsys.readouterr().out
    assert "[node 0] rank 0 of 2" in task_log
    assert "[node 1] rank 1 of 2" in task_log
    assert "TrainJob ml/tj-train-" in task_log
    assert "on ClusterTrainingRuntime torch-distributed: 2 nodes x 2 processes" in task_log
    assert nothing_left(stub)
    assert ("TrainJob", "ml", trainjob["metadata"]["name"]) in stub.deleted


def test_the_wait_runs_in_the_trigger_on_the_trainjob_conditions(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    from airflow.sdk.exceptions import TaskDeferred

    stub.script_pods(PodScript(run_seconds=0.5, result=rank0_result))
    make = operator_factory(snapshot, experiment, tmp_path, **TRAINJOB)
    context = k8s_context("trainjob_wait_dag")
    with pytest.raises(TaskDeferred) as deferred:
        make().execute(context)

    trigger = deferred.value.trigger
    assert isinstance(trigger, TrainJobTrigger)
    (trainjob,) = created(stub, "TrainJob")
    assert len(stub.live("Pod")) == 2  # the JobSet's pods run while the task holds no worker slot
    event = fire(trigger)
    assert event["status"] == "success"
    assert event["reason"] == "AllJobsCompleted"
    assert event["name"] == trainjob["metadata"]["name"]
    result = make().execute_complete(context, event=event, **deferred.value.kwargs)  # a new task process
    assert result["metrics"] == {"accuracy": 0.91}
    assert nothing_left(stub)


def test_a_failed_node_fails_the_trainjob_with_the_pods_own_reason(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    stub.script_pods(
        PodScript(result=rank0_result, run_seconds=0.6),
        PodScript(exit_code=137, terminated_reason="OOMKilled", run_seconds=0.2),
    )
    make = operator_factory(snapshot, experiment, tmp_path, **TRAINJOB, resources=Resources(memory="32Gi"))

    with pytest.raises(
        TrainingResourceError,
        match=r"^Node 1 of 2 \(pod tj-train-\S+\) of TrainJob tj-train-\S+ was OOMKilled",
    ) as excinfo:
        run_deferred(make, k8s_context("trainjob_fail_dag"))

    assert excinfo.value.retryable is False
    assert "(32Gi;" in str(excinfo.value)  # the limit it ran into
    assert excinfo.value.job.startswith("tj-train-")
    assert excinfo.value.pod.startswith(excinfo.value.job)
    assert len(created(stub, "TrainJob")) == 1  # an OOM is not retried within the try
    assert nothing_left(stub)
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"


def test_a_preempted_node_starts_a_new_trainjob_from_the_same_checkpoint(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    stub.script_pods(
        PodScript(run_seconds=0.2, pod_failure=PREEMPTED),
        PodScript(run_seconds=0.2),
        PodScript(result=rank0_result),
    )
    make = operator_factory(snapshot, experiment, tmp_path, **TRAINJOB)

    result = run_deferred(make, k8s_context("trainjob_preempt_dag"))

    first, second = created(stub, "TrainJob")
    assert first["metadata"]["name"] != second["metadata"]["name"]
    checkpoints = {env_of(tj)[contract.CHECKPOINT_URI]["value"] for tj in (first, second)}
    assert checkpoints == {result["checkpoint_uri"]}
    task_log = capsys.readouterr().out
    assert "of TrainJob " + first["metadata"]["name"] + " was preempted by a higher-priority pod" in task_log
    assert "(restart 1 of 3)" in task_log
    assert nothing_left(stub)
    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED"


def test_a_node_preempted_more_often_than_allowed_fails_with_a_retryable_error(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    stub.script_pods(PodScript(run_seconds=0.1, pod_failure=PREEMPTED))
    make = operator_factory(snapshot, experiment, tmp_path, **TRAINJOB, max_preemptions=1)

    with pytest.raises(TrainingPreemptedError, match="preempted by a higher-priority pod") as excinfo:
        run_deferred(make, k8s_context("trainjob_preempt_fail_dag"))

    assert excinfo.value.retryable is True
    assert len(created(stub, "TrainJob")) == 2
    assert nothing_left(stub)


def test_a_restarted_worker_reattaches_to_the_running_trainjob(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    from airflow.sdk.exceptions import TaskDeferred

    stub.script_pods(PodScript(run_seconds=1.0, result=rank0_result))
    make = operator_factory(snapshot, experiment, tmp_path, **TRAINJOB)

    with pytest.raises(TaskDeferred):
        make().execute(k8s_context("trainjob_reattach_dag"))  # ... then the worker dies
    result = run_deferred(make, k8s_context("trainjob_reattach_dag", try_number=2))

    (trainjob,) = created(stub, "TrainJob")  # no second TrainJob
    assert (
        f"Reattaching to TrainJob ml/{trainjob['metadata']['name']} of an earlier try"
        in capsys.readouterr().out
    )
    assert result["metrics"] == {"accuracy": 0.91}
    assert nothing_left(stub)


def test_killing_a_deferred_trainjob_task_deletes_the_trainjob_and_its_pods(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    stub.script_pods(PodScript(run_seconds=60))
    with pytest.raises(TaskDeferred) as deferred:
        operator_factory(snapshot, experiment, tmp_path, **TRAINJOB)().execute(
            k8s_context("trainjob_kill_dag")
        )
    assert len(stub.live("Pod")) == 2

    asyncio.run(deferred.value.trigger.on_kill())  # what the triggerer does when the task is killed

    assert nothing_left(stub)


# -- Kueue ------------------------------------------------------------------------------------------------------


def test_a_queued_trainjob_is_deferred_until_kueue_admits_it_as_a_whole(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    from airflow.sdk.exceptions import TaskDeferred

    stub.queues["team-a"] = 5  # quota frees up 5 requests later (the trigger polls every 0.1 s)
    stub.script_pods(PodScript(result=rank0_result))
    make = operator_factory(
        snapshot, experiment, tmp_path, **TRAINJOB, queue_name="team-a", queue_priority_class="batch-high"
    )
    context = k8s_context("trainjob_queue_dag")

    with pytest.raises(TaskDeferred) as deferred:
        make().execute(context)
    (trainjob,) = created(stub, "TrainJob")
    assert trainjob["spec"]["suspend"] is True
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "batch-high"
    assert isinstance(deferred.value.trigger, KueueAdmissionTrigger)
    assert stub.live("Pod") == []  # no pod holds a GPU while queued
    assert "is queued on Kueue LocalQueue 'team-a' (priority class batch-high)" in capsys.readouterr().out

    event = fire(deferred.value.trigger)
    assert event["status"] == "admitted"
    assert event["waited"] > 0  # it was still queued when the trigger started
    with pytest.raises(TaskDeferred) as training:  # admitted: now the training itself is waited for
        make().execute_complete(context, event=event, **deferred.value.kwargs)
    assert isinstance(training.value.trigger, TrainJobTrigger)
    assert len(stub.live("Pod")) == 2  # all nodes started together
    result = make().execute_complete(context, event=fire(training.value.trigger), **training.value.kwargs)

    assert stub.admitted == [("TrainJob", trainjob["metadata"]["name"], "team-a")]
    assert result["metrics"] == {"accuracy": 0.91}
    assert "was admitted by Kueue queue 'team-a' after" in capsys.readouterr().out
    assert nothing_left(stub)


def test_a_trainjob_never_admitted_fails_after_the_admission_timeout_and_is_deleted(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    make = operator_factory(
        snapshot, experiment, tmp_path, **TRAINJOB, queue_name="no-quota", admission_timeout=1
    )

    with pytest.raises(
        TrainingAdmissionTimeoutError, match=r"waited \S+ s on Kueue queue 'no-quota'"
    ) as excinfo:
        run_deferred(make, k8s_context("trainjob_no_quota_dag"))

    assert excinfo.value.retryable is True  # quota frees up: the task's retries queue it again
    assert stub.admitted == []
    assert nothing_left(stub)
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"


def test_a_queued_indexed_job_starts_its_pods_only_once_admitted(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    from airflow.sdk.exceptions import TaskDeferred

    stub.queues["team-a"] = 5
    stub.script_pods(PodScript(result=lambda env: trainer_result(env) if env["NODE_RANK"] == "0" else None))
    make = operator_factory(snapshot, experiment, tmp_path, num_nodes=2, queue_name="team-a")

    with pytest.raises(TaskDeferred) as deferred:
        make().execute(k8s_context("job_queue_dag"))
    (job,) = created(stub, "Job")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert (
        "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    )  # the Job is the unit
    assert isinstance(deferred.value.trigger, KueueAdmissionTrigger)
    assert stub.live("Pod") == []
    assert (
        f"Job ml/{job['metadata']['name']} is queued on Kueue LocalQueue 'team-a'" in capsys.readouterr().out
    )

    result = run_deferred(make, k8s_context("job_queue_dag", try_number=2))  # reattaches to the queued Job

    assert len(created(stub, "Job")) == 1
    assert stub.admitted == [("Job", job["metadata"]["name"], "team-a")]
    assert result["metrics"] == {"accuracy": 0.91}
    assert (stub.live("Job"), stub.live("Pod")) == ([], [])


def test_a_queued_pod_waits_for_admission_outside_its_schedule_timeout(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    stub.queues["team-a"] = (
        50  # 50 polls of the admission trigger: longer than the pod may wait to be scheduled
    )
    stub.script_pods(PodScript(result=trainer_result))
    make = operator_factory(snapshot, experiment, tmp_path, queue_name="team-a", schedule_timeout=3)
    timing = Timing()

    result = run_deferred(make, k8s_context("pod_queue_dag"), timing)

    (pod,) = created(stub, "Pod")
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert stub.admitted == [("Pod", pod["metadata"]["name"], "team-a")]
    assert timing.deferrals == 2  # the admission, then the training
    assert result["metrics"] == {"accuracy": 0.91}
    task_log = capsys.readouterr().out
    assert "is queued on Kueue LocalQueue 'team-a'" in task_log
    assert stub.live("Pod") == []
