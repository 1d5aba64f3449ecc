"""
Airflow version checks and the names that moved between Airflow 3.1 and 3.2, as Airflow's own providers keep them.

Airflow 3.2 added ``conf``, ``SkipMixin`` and the task exceptions to ``airflow.sdk``; on 3.1 they live in
``airflow.configuration``, ``airflow.providers.standard.utils.skipmixin`` and ``airflow.exceptions``, and the
task runner of 3.1 only recognises the exceptions from there. Import them from this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    """``(major, minor, micro)`` of the running Airflow, pre-release and local parts dropped."""
    from airflow import __version__
    from packaging.version import Version

    airflow_version = Version(__version__)
    return airflow_version.major, airflow_version.minor, airflow_version.micro


AIRFLOW_V_3_1_PLUS = get_base_airflow_version_tuple() >= (3, 1, 0)
AIRFLOW_V_3_2_PLUS = get_base_airflow_version_tuple() >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS = get_base_airflow_version_tuple() >= (3, 3, 0)

if TYPE_CHECKING or AIRFLOW_V_3_2_PLUS:
    from airflow.sdk import SkipMixin, conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        DownstreamTasksSkipped,
        ParamValidationError,
        TaskDeferred,
    )
else:
    from airflow.configuration import conf
    from airflow.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        DownstreamTasksSkipped,
        ParamValidationError,
        TaskDeferred,
    )
    from airflow.providers.standard.utils.skipmixin import SkipMixin

__all__ = [
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "DownstreamTasksSkipped",
    "ParamValidationError",
    "SkipMixin",
    "TaskDeferred",
    "conf",
]
