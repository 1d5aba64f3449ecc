"""What the model operators share: a lazily built MLflow hook and the task's link to the model version."""

from __future__ import annotations

from functools import cached_property

from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import MLflowModelVersionLink, model_version_url


class ModelOperatorMixin:
    """Shared lazily built hook and the link to the model version; operators set ``mlflow_conn_id``."""

    mlflow_conn_id: str
    operator_extra_links = (MLflowModelVersionLink(),)

    @cached_property
    def hook(self) -> MLflowHook:
        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def link_model_version(self, model_name: str, version: int | str) -> None:
        """Point the task's "MLflow model version" link at *version* of *model_name*."""
        self.mlflow_model_version_url = model_version_url(self.hook.tracking_uri, model_name, version)
