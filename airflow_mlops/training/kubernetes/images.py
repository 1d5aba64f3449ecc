"""
The image a training pod actually ran, recorded on the training's MLflow run.

A tag such as ``trainer:1.0`` names whatever the registry holds under it when the pod starts; the kubelet reports
the image it pulled, by digest, as ``status.containerStatuses[].imageID``. That digest is written to the MLflow
run as ``mlops.code.image_digest``, so a model's lineage names the exact image it was trained with.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow_mlops import tags as T
from airflow_mlops.trainer import contract
from airflow_mlops.training.kubernetes.failures import container_status

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_mlops.training.base import TaskLog
    from airflow_mlops.training.spec import TrainingSpec

_RUNTIME_PREFIX = re.compile(r"^[a-z][a-z0-9+.-]*://")


def image_digest(pod: Mapping[str, Any] | None, container: str) -> str | None:
    """
    The image *container* of *pod* (a pod as the API returns it) ran: ``<repository>@sha256:<hex>``.

    The container runtime's prefix (``docker-pullable://``, ``docker://``) is dropped. None when the status has no
    ``imageID`` (the container never started).
    """
    image_id = str(container_status(dict(pod or {}), container).get("imageID") or "").strip()
    return _RUNTIME_PREFIX.sub("", image_id) or None


def record_image_digest(
    spec: TrainingSpec, pod: Mapping[str, Any] | None, container: str, log: TaskLog
) -> str | None:
    """
    Tag the training's MLflow run with the image digest *container* of *pod* ran (``mlops.code.image_digest``).

    Best effort: the training's outcome does not depend on it, so a failure to write the tag is logged as a
    warning and the training goes on.

    :return: The digest, or None when the pod's status has none.
    """
    digest = image_digest(pod, container)
    if digest is None:
        log.warning(
            "The training pod's status names no image digest (imageID) for container %s; "
            "%s is not recorded on MLflow run %s",
            container, T.CODE_IMAGE_DIGEST, spec.mlflow_run_id,
        )  # fmt: skip
        return None
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=spec.contract_env.get(contract.TRACKING_URI) or None).set_tag(
            spec.mlflow_run_id, T.CODE_IMAGE_DIGEST, digest
        )
    except Exception as err:
        log.warning("Could not record image %s on MLflow run %s: %s", digest, spec.mlflow_run_id, err)
        return digest
    log.info("Training image: %s (recorded on MLflow run %s)", digest, spec.mlflow_run_id)
    return digest
