"""Example trainers that follow the training contract (:mod:`airflow_mlops.trainer.contract`)."""

from __future__ import annotations
