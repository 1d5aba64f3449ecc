"""The multi-node training trigger keeps the whole cluster connection across serialization."""

from __future__ import annotations

from airflow_mlops.triggers.training import KubernetesTrainingJobTrigger
from airflow_mlops.utils.k8s import KubernetesConnection


def test_serialize_returns_exactly_the_constructor_arguments_with_the_whole_connection():
    connection = KubernetesConnection(
        conn_id="gke", namespace="ml", config_file="/etc/kube/config", cluster_context="prod", in_cluster=False
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
