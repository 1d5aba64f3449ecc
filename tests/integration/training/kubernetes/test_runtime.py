"""
TrainModelOperator with the Kubernetes runtime, against a Kubernetes API-server stand-in on loopback.

The stand-in (tests/support/kubernetes/cluster.py) speaks real HTTP (and a real WebSocket for KPO's XCom exec) to the real
kubernetes clients and the real cncf-kubernetes operator and trigger code, validates every object it is sent
against the Kubernetes 1.30 and newest schemas, and scripts what happens to each pod. MLflow is the session's
real tracking server.
"""

from __future__ import annotations

import json

import pytest

from airflow_mlops import tags
from airflow_mlops.exceptions import (
    InvalidManifestError,
    TrainingError,
    TrainingImageError,
    TrainingPreemptedError,
    TrainingResourceError,
)
from airflow_mlops.operators.training import KubernetesRuntime, Resources
from airflow_mlops.trainer import contract
from tests.conftest import set_connection
from tests.support.deferred import RUN_ID, TaskStateStore, Timing, k8s_context, run_deferred
from tests.support.kubernetes import PodScript
from tests.support.kubernetes_training import FAST, operator_factory, trainer_result
from tests.support.training import runs_of

pytestmark = pytest.mark.integration


def test_pod_runs_deferred_and_returns_the_trainer_result_through_the_xcom_sidecar(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    from mlflow import MlflowClient

    seen_at_creation = {}

    def on_create(pod):  # the MLflow run must exist, RUNNING, before the pod does
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        seen_at_creation["run"] = MlflowClient(mlflow_server.uri).get_run(env[contract.RUN_ID]).info.status

    stub.script_pods(
        PodScript(pending_seconds=0.3, run_seconds=0.3, logs=["epoch 1 loss 0.52", "epoch 2 loss 0.31"],
                  result=trainer_result, on_create=on_create)
    )  # fmt: skip
    make = operator_factory(snapshot, experiment, tmp_path, gpus=1, resources=Resources(memory="8Gi"))
    timing = Timing()

    result = run_deferred(make, k8s_context("k8s_dag"), timing)

    (run,) = runs_of(experiment)
    assert seen_at_creation["run"] == "RUNNING"
    assert result == {
        "run_id": run.info.run_id,
        "model_uri": f"runs:/{run.info.run_id}/model",
        "metrics": {"accuracy": 0.91},
        "checkpoint_uri": str(tmp_path / "runs" / "k8s_dag" / RUN_ID / "train" / "checkpoints"),
    }
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags[tags.TRAINING_RESULT]) == result
    assert timing.deferrals == 1  # the wait happened in the trigger
    (pod,) = [o for o in stub.created if o["kind"] == "Pod"]
    assert pod["metadata"]["namespace"] == "ml"  # the connection's namespace
    assert stub.live("Pod") == []  # deleted after the result was read
    assert ("Pod", "ml", pod["metadata"]["name"]) in stub.deleted
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[contract.RESULT_PATH] == "/airflow/xcom/return.json"
    assert container["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    assert [c["name"] for c in pod["spec"]["containers"]] == ["base", "airflow-xcom-sidecar"]


def test_credentials_reach_the_pod_only_as_secret_references(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    from airflow_mlops.operators.training import TrainModelOperator

    set_connection(
        "mlflow_with_token", conn_type="mlflow", host=mlflow_server.uri, extra={"token": "tok-SECRET-1"}
    )
    set_connection(
        "aws_with_keys", conn_type="aws", login="AKIA-SECRET-2", password="secret-SECRET-3",
        extra={"endpoint_url": "http://minio.storage:9000", "region_name": "eu-west-3"},
    )  # fmt: skip
    stub.script_pods(PodScript(result=trainer_result))
    runtime = KubernetesRuntime(
        image="registry.example.com/trainer:1.0",
        secret_env={"MLFLOW_TRACKING_TOKEN": "mlflow-auth/token"},
        env_from_secrets=["s3-credentials"],
        **FAST,
    )

    def make():
        return TrainModelOperator(
            task_id="train", entrypoint="pkg.train", train_data=snapshot, experiment_name=experiment,
            output_root="s3://bucket/runs", runtime=runtime, mlflow_conn_id="mlflow_with_token",
            aws_conn_id="aws_with_keys",
        )  # fmt: skip

    stub.secrets[("ml", "mlflow-auth")] = {"token": "tok-SECRET-1"}
    stub.secrets[("ml", "s3-credentials")] = {"AWS_ACCESS_KEY_ID": "AKIA-SECRET-2"}
    run_deferred(make, k8s_context("secrets_dag"))

    (pod,) = [o for o in stub.created if o["kind"] == "Pod"]
    text = json.dumps(pod)
    for secret in ("tok-SECRET-1", "AKIA-SECRET-2", "secret-SECRET-3"):
        assert secret not in text
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "mlflow-auth", "key": "token"}
    }
    assert pod["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.storage:9000"
    assert env["AWS_REGION"]["value"] == "eu-west-3"
    assert env[contract.CHECKPOINT_URI]["value"] == f"s3://bucket/runs/secrets_dag/{RUN_ID}/train/checkpoints"


@pytest.mark.parametrize(
    ("script", "expected", "error_type"),
    [
        pytest.param(
            PodScript(run_seconds=0.2, exit_code=137, terminated_reason="OOMKilled", logs=["loading batch 1"]),
            r"^Training pod \S+ was OOMKilled: the trainer used more memory than its limit \(4Gi; /dev/shm counts "
            r"towards it\)\. Raise memory= .*batch size",
            TrainingResourceError,
            id="oom",
        ),
        pytest.param(
            PodScript(waiting=("ImagePullBackOff", 'Back-off pulling image "registry.example.com/trainer:1.0"')),
            r"^Training pod \S+ cannot pull image 'registry.example.com/trainer:1.0' \(ImagePullBackOff: .*\)\. "
            r"Check the image name and tag, and give image_pull_secrets= for a private registry\.$",
            TrainingImageError,
            id="image-pull",
        ),
        pytest.param(
            PodScript(unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 "
                                    "nodes are available: 4 No preemption victims found for incoming pod."),
            r"^Training pod \S+ could not be scheduled within 1 s: 0/4 nodes are available: 4 Insufficient "
            r"nvidia.com/gpu\..*No node has 2 free nvidia.com/gpu: ask for fewer gpus",
            TrainingError,
            id="unschedulable",
        ),
        pytest.param(
            PodScript(waiting=None, exit_code=3, logs=["Traceback ...", "ValueError: no column 'label'"]),
            r"^Training pod \S+: the trainer exited with code 3 \(Error\)\. Its output is in the task log above\.$",
            TrainingError,
            id="exit-code",
        ),
    ],
)  # fmt: skip
def test_failures_end_in_one_line_saying_what_happened_and_what_to_change(
    mlflow_server, stub, snapshot, experiment, tmp_path, script, expected, error_type
):
    stub.script_pods(script)
    make = operator_factory(
        snapshot, experiment, tmp_path, gpus=2, resources=Resources(memory="4Gi"), schedule_timeout=1
    )

    with pytest.raises(TrainingError, match=expected) as excinfo:
        run_deferred(make, k8s_context("failing_dag"))

    assert type(excinfo.value) is error_type
    # OOMKilled and image pull errors fail at once (no retries spent); the others may be retried
    assert excinfo.value.retryable is (error_type is TrainingError)
    assert excinfo.value.pod == stub.created[-1]["metadata"]["name"]
    assert excinfo.value.model == experiment
    assert "\n" not in str(excinfo.value)
    assert stub.live("Pod") == []  # cleaned up
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"


def test_a_preempted_pod_is_started_again_and_resumes_from_the_same_checkpoint(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    preempted = PodScript(
        run_seconds=0.2,
        pod_failure={"reason": "", "message": "Preempted in order to admit critical pod",
                     "disruption": "PreemptionByScheduler"},
    )  # fmt: skip
    evicted = PodScript(
        run_seconds=0.2,
        pod_failure={"reason": "Evicted", "message": "The node was low on resource: memory."},
    )
    stub.script_pods(preempted, evicted, PodScript(result=trainer_result))
    make = operator_factory(snapshot, experiment, tmp_path)

    result = run_deferred(make, k8s_context("preempt_dag"))

    pods = [o for o in stub.created if o["kind"] == "Pod"]
    assert len(pods) == 3
    checkpoints = {
        next(e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"] == contract.CHECKPOINT_URI)
        for pod in pods
    }
    assert checkpoints == {result["checkpoint_uri"]}
    task_log = capsys.readouterr().out
    assert "was preempted by a higher-priority pod" in task_log
    assert "was evicted: The node was low on resource: memory." in task_log
    assert stub.live("Pod") == []
    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED"


def test_a_restarted_worker_reattaches_to_the_running_pod(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    from airflow.sdk.exceptions import TaskDeferred

    stub.script_pods(PodScript(run_seconds=1.0, result=trainer_result))
    make = operator_factory(snapshot, experiment, tmp_path)
    store = TaskStateStore()

    with pytest.raises(TaskDeferred):
        make().execute(k8s_context("reattach_dag", state_store=store))  # ... then the worker dies
    result = run_deferred(make, k8s_context("reattach_dag", try_number=2, state_store=store))

    assert len([o for o in stub.created if o["kind"] == "Pod"]) == 1  # no second pod
    assert result["metrics"] == {"accuracy": 0.91}


def test_killing_the_task_deletes_its_pod(mlflow_server, stub, snapshot, experiment, tmp_path):
    import threading
    import time

    stub.script_pods(PodScript(pending_seconds=0.1, run_seconds=60, result=trainer_result))
    op = operator_factory(snapshot, experiment, tmp_path, deferrable=False)()  # waits in the worker
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(k8s_context("kill_dag"))
        except BaseException as err:
            errors.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while not stub.live("Pod") and time.monotonic() < deadline:
        time.sleep(0.05)
    (name,) = stub.live("Pod")
    while stub.pod(name, "ml")["status"]["phase"] != "Running" and time.monotonic() < deadline:
        time.sleep(0.05)

    op.on_kill()
    worker.join(timeout=60)

    assert not worker.is_alive()
    assert stub.live("Pod") == []
    assert len(errors) == 1
    assert isinstance(errors[0], TrainingError)
    assert "was deleted because the task was killed" in str(errors[0])
    assert len([o for o in stub.created if o["kind"] == "Pod"]) == 1  # not started again


# -- multi-node: Indexed Job + headless Service ------------------------------------------------------------


def rank0_result(env: dict[str, str]) -> dict | None:
    return trainer_result(env) if env["NODE_RANK"] == "0" else None


def test_multi_node_training_runs_as_an_indexed_job_and_returns_rank_0s_result(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    stub.script_pods(
        PodScript(
            logs=lambda env: [f"rank {env['NODE_RANK']} joined {env['MASTER_ADDR']}"], result=rank0_result
        )
    )
    make = operator_factory(snapshot, experiment, tmp_path, num_nodes=2, gpus=1)

    result = run_deferred(make, k8s_context("multinode_dag"))

    (run,) = runs_of(experiment)
    assert result["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    (job,) = [o for o in stub.created if o["kind"] == "Job"]
    (service,) = [o for o in stub.created if o["kind"] == "Service"]
    name = job["metadata"]["name"]
    assert service["metadata"]["name"] == name
    assert service["metadata"]["ownerReferences"][0]["name"] == name
    task_log = capsys.readouterr().out
    assert f"rank 0 joined {name}-0.{name}" in task_log
    assert f"rank 1 joined {name}-0.{name}" in task_log
    # everything is gone afterwards
    assert (stub.live("Job"), stub.live("Service"), stub.live("Pod")) == ([], [], [])


def test_a_failed_node_fails_the_job_with_its_reason_and_everything_is_deleted(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    stub.script_pods(
        PodScript(result=rank0_result, run_seconds=0.6),
        PodScript(exit_code=137, terminated_reason="OOMKilled", run_seconds=0.2),
    )
    make = operator_factory(snapshot, experiment, tmp_path, num_nodes=2, resources=Resources(memory="32Gi"))

    with pytest.raises(
        TrainingError, match=r"^Node 1 of 2 \(pod job-train-\S+\) of Job job-train-\S+ was OOMKilled"
    ) as excinfo:
        run_deferred(make, k8s_context("multinode_fail_dag"))

    assert isinstance(excinfo.value, TrainingResourceError)
    assert excinfo.value.retryable is False
    assert excinfo.value.job.startswith("job-train-")
    assert excinfo.value.pod.startswith(excinfo.value.job)

    assert (stub.live("Job"), stub.live("Service"), stub.live("Pod")) == ([], [], [])
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"


def test_killing_a_deferred_multi_node_task_deletes_the_job_its_pods_and_service(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    stub.script_pods(PodScript(run_seconds=60))
    with pytest.raises(TaskDeferred) as deferred:
        operator_factory(snapshot, experiment, tmp_path, num_nodes=3)().execute(k8s_context("kill_job_dag"))
    assert len(stub.live("Pod")) == 3

    asyncio.run(deferred.value.trigger.on_kill())  # what the triggerer does when the task is killed

    assert (stub.live("Job"), stub.live("Service"), stub.live("Pod")) == ([], [], [])


def test_a_restarted_worker_reattaches_to_the_running_job(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    from airflow.sdk.exceptions import TaskDeferred

    stub.script_pods(PodScript(run_seconds=1.0, result=rank0_result))
    make = operator_factory(snapshot, experiment, tmp_path, num_nodes=2)

    with pytest.raises(TaskDeferred):
        make().execute(k8s_context("reattach_job_dag"))  # ... then the worker dies
    result = run_deferred(make, k8s_context("reattach_job_dag", try_number=2))

    assert len([o for o in stub.created if o["kind"] == "Job"]) == 1  # no second Job
    assert result["metrics"] == {"accuracy": 0.91}
    assert (stub.live("Job"), stub.live("Service"), stub.live("Pod")) == ([], [], [])


def test_a_pod_deleted_under_the_task_is_started_again(mlflow_server, stub, snapshot, experiment, tmp_path):
    from airflow.sdk.exceptions import TaskDeferred

    from tests.support.deferred import fire

    stub.script_pods(PodScript(run_seconds=30), PodScript(result=trainer_result))
    make = operator_factory(snapshot, experiment, tmp_path)
    context = k8s_context("deleted_pod_dag")
    with pytest.raises(TaskDeferred) as first:
        make().execute(context)
    (name,) = stub.live("Pod")
    stub.kill_pod(name, "ml")  # preempted: the pod object is gone

    with pytest.raises(TaskDeferred) as second:  # a new pod, the same launch
        make().execute_complete(context, event=fire(first.value.trigger), **first.value.kwargs)
    result = make().execute_complete(context, event=fire(second.value.trigger), **second.value.kwargs)

    assert second.value.kwargs["spec"]["attempt"] == 2
    assert result["checkpoint_uri"] == first.value.kwargs["spec"]["contract_env"][contract.CHECKPOINT_URI]
    assert len([o for o in stub.created if o["kind"] == "Pod"]) == 2


def test_a_pod_preempted_more_often_than_allowed_fails_with_a_retryable_error(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    preempted = PodScript(
        run_seconds=0.2,
        pod_failure={"reason": "", "message": "Preempted", "disruption": "PreemptionByScheduler"},
    )
    stub.script_pods(preempted, preempted)
    make = operator_factory(snapshot, experiment, tmp_path, max_preemptions=1)

    with pytest.raises(
        TrainingPreemptedError, match=r"was preempted by a higher-priority pod.*max_preemptions=1"
    ) as err:
        run_deferred(make, k8s_context("preempted_twice_dag"))

    assert err.value.retryable is True  # the task's retries start it again
    assert err.value.reason == "PreemptionByScheduler"
    assert len([o for o in stub.created if o["kind"] == "Pod"]) == 2
    assert stub.live("Pod") == []


def test_a_pod_the_api_server_refuses_fails_at_once_as_an_invalid_manifest(
    mlflow_server, stub, snapshot, experiment, tmp_path
):
    make = operator_factory(
        snapshot, experiment, tmp_path,
        # a mode the client passes through untouched and the schema refuses (it must be an integer)
        volumes=[{"name": "config", "configMap": {"name": "trainer-config", "defaultMode": {"octal": "0644"}}}],
    )  # fmt: skip

    with pytest.raises(
        InvalidManifestError, match=r"The API server rejected the training pod of task 'train'"
    ) as err:
        run_deferred(make, k8s_context("invalid_pod_dag"))

    assert err.value.retryable is False
    assert stub.rejected  # the stand-in refused it (422), as an API server would
    stub.rejected.clear()
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"
