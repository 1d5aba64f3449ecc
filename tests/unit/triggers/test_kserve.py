"""The KServe readiness trigger serializes exactly its arguments, the whole cluster connection included."""

from __future__ import annotations

from airflow_mlops.triggers.kserve import KServeInferenceServiceReadyTrigger
from airflow_mlops.utils.k8s import KubernetesConnection


def test_trigger_serializes_exactly_its_arguments():
    connection = KubernetesConnection(
        conn_id="k8s",
        namespace="models",
        config_file="/etc/kube/config",
        cluster_context="prod",
        in_cluster=False,
    ).to_dict()
    trigger = KServeInferenceServiceReadyTrigger(
        name="churn",
        connection=connection,
        min_generation=3,
        deadline=1e9,
        poll_interval=5,
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_mlops.triggers.kserve.KServeInferenceServiceReadyTrigger"
    assert kwargs == {
        "name": "churn", "connection": connection, "min_generation": 3, "deadline": 1e9, "poll_interval": 5.0,
    }  # fmt: skip
    assert kwargs["connection"] == {
        "conn_id": "k8s", "namespace": "models", "config_file": "/etc/kube/config", "cluster_context": "prod",
        "in_cluster": False,
    }  # fmt: skip
    assert KServeInferenceServiceReadyTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert trigger.namespace == "models"


def test_a_trigger_without_a_connection_uses_the_default_one():
    trigger = KServeInferenceServiceReadyTrigger(name="churn", deadline=1e9)

    assert trigger.serialize()[1]["connection"] == KubernetesConnection().to_dict()
    assert trigger.namespace == "default"


def test_the_trigger_reads_through_the_hook_of_its_whole_connection_without_a_deprecation(recwarn):
    connection = KubernetesConnection(
        conn_id="k8s",
        namespace="models",
        config_file="/etc/kube/config",
        cluster_context="prod",
        in_cluster=False,
    )
    trigger = KServeInferenceServiceReadyTrigger(name="churn", connection=connection.to_dict(), deadline=1e9)

    hook = trigger._hook()

    assert hook.kubernetes_conn_id == "k8s"
    assert hook.connection == connection
    assert hook.namespace == "models"
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
