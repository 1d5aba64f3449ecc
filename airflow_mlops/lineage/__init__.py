"""
Lineage kept in the MLflow registry: the chain of a model version (``chain``) and the deployment history of a
model (``deployments``), both read from and written to ``mlops.*`` tags alone.
"""

from __future__ import annotations
