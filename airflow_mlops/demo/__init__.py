"""The embedded demo: demo data and a local Airflow + MLflow stack that runs the example DAGs."""

from __future__ import annotations
