"""
Pluggable serving targets behind the deployment operators (see docs/deployment.md).

Public names are loaded lazily, so importing this package (or its stand-alone ``_proxy`` module, which the local
target runs as a process of its own) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.deploy_targets.base import (
        Deployment,
        DeployTarget,
        Health,
        PredictionError,
        register_target_kind,
        target_class,
        target_from_config,
    )
    from airflow_mlops.deploy_targets.kserve import KServeTarget
    from airflow_mlops.deploy_targets.local import LocalServerTarget

_LAZY = {
    "Deployment": "airflow_mlops.deploy_targets.base",
    "DeployTarget": "airflow_mlops.deploy_targets.base",
    "Health": "airflow_mlops.deploy_targets.base",
    "PredictionError": "airflow_mlops.deploy_targets.base",
    "register_target_kind": "airflow_mlops.deploy_targets.base",
    "target_class": "airflow_mlops.deploy_targets.base",
    "target_from_config": "airflow_mlops.deploy_targets.base",
    "LocalServerTarget": "airflow_mlops.deploy_targets.local",
    "KServeTarget": "airflow_mlops.deploy_targets.kserve",
}

__all__ = [
    "DeployTarget",
    "Deployment",
    "Health",
    "KServeTarget",
    "LocalServerTarget",
    "PredictionError",
    "register_target_kind",
    "target_class",
    "target_from_config",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
