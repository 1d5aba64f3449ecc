"""Hooks: one per backend (MLflow, storage, KServe); each builds its client lazily from an Airflow connection."""
