"""What users import keeps its import path: stage modules, sensors, triggers, hooks, the serving plug-in API."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "airflow_mlops.operators.ingest": ["IngestDatasetOperator"],
    "airflow_mlops.operators.validation": ["ValidateDatasetOperator", "check_expectations", "columns_to_read"],
    "airflow_mlops.operators.drift": ["DriftCheckOperator"],
    "airflow_mlops.operators.training": [
        "TrainModelOperator", "LocalRuntime", "KubernetesRuntime", "Gpus", "Resources", "Scheduling",
        "KubernetesConnection", "TrainingRuntime", "TrainingSpec", "runtime_from_env", "RUNTIMES",
    ],
    "airflow_mlops.operators.registry": ["RegisterModelOperator", "PromoteModelOperator"],
    "airflow_mlops.operators.evaluation": ["EvaluateModelOperator"],
    "airflow_mlops.operators.approval": ["ApproveModelOperator"],
    "airflow_mlops.operators.replay": ["ReplayTrafficOperator"],
    "airflow_mlops.operators.monitoring": [
        "MonitorModelOperator", "RequestRetrainingOperator", "describe_trigger", "retraining_asset",
    ],
    "airflow_mlops.retraining": ["describe_trigger", "retraining_asset"],
    "airflow_mlops.operators.deployment": [
        "InfraValidateOperator", "DeployModelOperator", "RollbackModelOperator", "CanaryPolicy",
    ],
    "airflow_mlops.sensors.new_data": ["NewDataSensor"],
    "airflow_mlops.triggers.new_data": ["NewDataTrigger"],
    "airflow_mlops.triggers.training": ["KubernetesTrainingJobTrigger"],
    "airflow_mlops.triggers.kserve": ["KServeInferenceServiceReadyTrigger"],
    "airflow_mlops.triggers.release": ["ReleaseFinishedTrigger"],
    "airflow_mlops.hooks.mlflow": ["MLflowHook"],
    "airflow_mlops.hooks.storage": ["StorageHook"],
    "airflow_mlops.deploy_targets": [
        "DeployTarget", "Deployment", "Health", "LocalServerTarget", "KServeTarget", "register_target_kind",
    ],
    "airflow_mlops.trainer.contract": ["TrainingContext"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_keep_their_import_path(module):
    loaded = importlib.import_module(module)
    assert [name for name in PUBLIC[module] if not hasattr(loaded, name)] == []


def test_a_re_exported_name_is_the_same_object_as_where_it_lives():
    from airflow_mlops.deploy_targets import DeployTarget
    from airflow_mlops.operators.monitoring import retraining_asset
    from airflow_mlops.operators.training import KubernetesRuntime
    from airflow_mlops.retraining import retraining_asset as light_retraining_asset
    from airflow_mlops.serving.base import DeployTarget as ServingDeployTarget
    from airflow_mlops.training.kubernetes.runtime import KubernetesRuntime as RuntimeClass

    assert DeployTarget is ServingDeployTarget
    assert retraining_asset is light_retraining_asset
    assert KubernetesRuntime is RuntimeClass
