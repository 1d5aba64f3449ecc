"""Example trainers that follow the training contract (:mod:`airflow_mlops.runtime.contract`)."""

from __future__ import annotations
