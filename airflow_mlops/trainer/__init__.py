"""
Code that runs where the work happens: inside training containers and local training processes.

Nothing in this package imports Airflow, so a training image needs only this package's runtime
dependencies (mlflow, pandas, pyarrow, boto3).
"""

from __future__ import annotations
