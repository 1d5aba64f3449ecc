"""The multi-node training trigger keeps the whole cluster connection across serialization."""

from __future__ import annotations

from airflow_mlops.triggers.training import KubernetesTrainingJobTrigger
from airflow_mlops.utils.k8s import KubernetesConnection


def test_serialize_returns_exactly_the_constructor_arguments_with_the_whole_connection():
    connection = KubernetesConnection(
        conn_id="gke",
        namespace="ml",
        config_file="/etc/kube/config",
        cluster_context="prod",
        in_cluster=False,
    )
    trigger = KubernetesTrainingJobTrigger(
        job_name="job-train-1", namespace="ml", connection=connection.to_dict(), poll_interval=2
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_mlops.triggers.training.KubernetesTrainingJobTrigger"
    assert kwargs == {"job_name": "job-train-1", "namespace": "ml", "connection": connection.to_dict(),
                      "poll_interval": 2.0}  # fmt: skip
    again = KubernetesTrainingJobTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    job_trigger = again._job_trigger()
    assert (job_trigger.kubernetes_conn_id, job_trigger.config_file, job_trigger.cluster_context,
            job_trigger.in_cluster) == ("gke", "/etc/kube/config", "prod", False)  # fmt: skip


def test_the_admission_and_trainjob_triggers_serialize_to_exactly_their_arguments():
    from airflow_mlops.triggers.training import KueueAdmissionTrigger, TrainJobTrigger

    connection = KubernetesConnection(conn_id="gke", namespace="ml").to_dict()
    for trigger in (
        KueueAdmissionTrigger(kind="TrainJob", name="tj-1", namespace="ml", queue_name="team-a", timeout=60,
                              connection=connection, poll_interval=2),
        TrainJobTrigger(name="tj-1", namespace="ml", connection=connection, poll_interval=2),
    ):  # fmt: skip
        classpath, kwargs = trigger.serialize()
        assert classpath == f"airflow_mlops.triggers.training.{type(trigger).__name__}"
        assert type(trigger)(**kwargs).serialize() == (classpath, kwargs)
        assert kwargs["connection"] == connection


def test_the_admission_trigger_refuses_an_unknown_kind():
    import pytest

    from airflow_mlops.triggers.training import KueueAdmissionTrigger

    with pytest.raises(ValueError, match="kind must be 'Pod', 'Job' or 'TrainJob'"):
        KueueAdmissionTrigger(kind="Deployment", name="x", namespace="ml", queue_name="q", timeout=1)
