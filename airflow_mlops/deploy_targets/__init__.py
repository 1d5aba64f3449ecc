"""
The serving targets' former home, kept for user-written targets.

``airflow_mlops.deploy_targets.DeployTarget`` (the base class of user-written targets) keeps working: every
name is :mod:`airflow_mlops.serving`'s. The entry-point group user targets register in is still
``airflow_mlops.deploy_targets``.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops import serving

__all__ = serving.__all__


def __getattr__(name: str) -> Any:
    return getattr(serving, name)
