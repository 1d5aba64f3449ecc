"""
Serving: pluggable targets behind the deployment operators, with their verification and canary policy.

See docs/deployment.md.

Public names are loaded lazily, so importing this package (or its stand-alone ``proxy`` module, which the local
target runs as a process of its own) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.serving.base import (
        Deployment,
        DeployTarget,
        Health,
        PredictionError,
        register_target_kind,
        target_class,
        target_from_config,
    )
    from airflow_mlops.serving.canary import CanaryPolicy
    from airflow_mlops.serving.kserve import KServeTarget
    from airflow_mlops.serving.local import LocalServerTarget

_LAZY = {
    "Deployment": "airflow_mlops.serving.status",
    "DeployTarget": "airflow_mlops.serving.base",
    "Health": "airflow_mlops.serving.status",
    "PredictionError": "airflow_mlops.serving.base",
    "register_target_kind": "airflow_mlops.serving.base",
    "target_class": "airflow_mlops.serving.base",
    "target_from_config": "airflow_mlops.serving.base",
    "LocalServerTarget": "airflow_mlops.serving.local",
    "CanaryPolicy": "airflow_mlops.serving.canary",
    "KServeTarget": "airflow_mlops.serving.kserve",
}

__all__ = [
    "CanaryPolicy",
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
    """Load a public name on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
