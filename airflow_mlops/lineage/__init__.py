"""
Lineage kept in the MLflow registry, read from and written to ``mlops.*`` tags alone.

The chain of a model version (:mod:`~airflow_mlops.lineage.chain`) and the deployment history of a model
(:mod:`~airflow_mlops.lineage.deployments`).
"""

from __future__ import annotations
