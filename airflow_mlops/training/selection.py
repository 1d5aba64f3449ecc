"""
Which runtime a training uses: by name (:func:`resolve_runtime`) or from the environment (:func:`runtime_from_env`).

Cheap to import and to call when a DAG file is parsed: the Kubernetes runtime is imported only when chosen.
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING

from airflow_mlops.training.base import TrainingRuntime
from airflow_mlops.training.local import LocalRuntime

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_mlops.training.kubernetes.runtime import KubernetesRuntime

#: Training runtimes accepted by name; other runtimes are passed as objects (``KubernetesRuntime``).
RUNTIMES = ("local",)


def runtime_from_env(environ: Mapping[str, str] | None = None) -> str | KubernetesRuntime:
    """
    The training runtime a deployment chose through the environment (cheap: read when a DAG file is parsed).

    - ``MLOPS_TRAINING_RUNTIME``: ``local`` (default) or ``kubernetes``;
    - with ``kubernetes``: ``MLOPS_TRAINING_IMAGE`` (required), ``MLOPS_TRAINING_GPUS`` (default 0),
      ``MLOPS_TRAINING_NAMESPACE`` (default: the connection's), ``MLOPS_TRAINING_ENV_SECRETS``
      (comma-separated Secrets whose keys become the pod's environment, e.g. MLflow and S3 credentials).

    :raises ValueError: naming the variable that is wrong.
    """
    env = os.environ if environ is None else environ
    kind = (env.get("MLOPS_TRAINING_RUNTIME") or "local").strip().lower()
    if kind == "local":
        return "local"
    if kind != "kubernetes":
        raise ValueError(f"MLOPS_TRAINING_RUNTIME must be 'local' or 'kubernetes', got {kind!r}")
    image = (env.get("MLOPS_TRAINING_IMAGE") or "").strip()
    if not image:
        raise ValueError(
            "MLOPS_TRAINING_RUNTIME=kubernetes needs MLOPS_TRAINING_IMAGE, the trainer image "
            "(built from docker/trainer-sklearn.Dockerfile or docker/trainer-torch.Dockerfile)"
        )
    gpus = (env.get("MLOPS_TRAINING_GPUS") or "0").strip()
    if not gpus.isdigit():
        raise ValueError(f"MLOPS_TRAINING_GPUS must be a whole number, got {gpus!r}")
    secrets = [s.strip() for s in (env.get("MLOPS_TRAINING_ENV_SECRETS") or "").split(",") if s.strip()]

    from airflow_mlops.training.kubernetes.runtime import KubernetesRuntime
    from airflow_mlops.utils.k8s import KubernetesConnection

    return KubernetesRuntime(
        image=image,
        gpus=int(gpus),
        connection=KubernetesConnection(namespace=(env.get("MLOPS_TRAINING_NAMESPACE") or "").strip() or None),
        env_from_secrets=secrets,
    )


def resolve_runtime(runtime: str | TrainingRuntime) -> TrainingRuntime:
    """
    The runtime object for *runtime*: ``"local"`` or a :class:`TrainingRuntime` (copied).

    :raises ValueError: naming what is accepted.
    """
    if isinstance(runtime, TrainingRuntime):
        return copy.deepcopy(runtime)
    if runtime == "local":
        return LocalRuntime()
    raise ValueError(
        f"runtime must be one of {', '.join(repr(r) for r in RUNTIMES)}; got {runtime!r}. For Kubernetes pass a "
        "runtime object: runtime=KubernetesRuntime(image='registry/trainer:1.0', gpus=1) "
        "(from airflow_mlops.operators.training import KubernetesRuntime)"
    )
