"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """The provider's metadata: integrations, hooks, triggers, connection types, extra links, configuration."""
    from airflow_mlops import __version__
    from airflow_mlops.data.sources import DEFAULT_MAX_SOURCE_BYTES, DEFAULT_MAX_SOURCE_FILES

    return {
        "package-name": "airflow-provider-mlops",
        "name": "MLOps",
        "description": "Operators, sensors, triggers and hooks for the ML lifecycle: ingest, validation, "
        "training, evaluation gates, human approval, deployment and rollback.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "MLflow", "external-doc-url": "https://mlflow.org/", "tags": ["software"]},
            {
                "integration-name": "Great Expectations",
                "external-doc-url": "https://greatexpectations.io/",
                "tags": ["software"],
            },
            {
                "integration-name": "KServe",
                "external-doc-url": "https://kserve.github.io/",
                "tags": ["software"],
            },
            {
                "integration-name": "Apache Spark",
                "external-doc-url": "https://spark.apache.org/",
                "tags": ["software"],
            },
            {
                "integration-name": "MLOps datasets",
                "external-doc-url": "https://airflow.apache.org/docs/apache-airflow/stable/authoring-and-scheduling/assets.html",
                "tags": ["software"],
            },
            {
                "integration-name": "MLOps training",
                "external-doc-url": "https://mlflow.org/docs/latest/ml/tracking/",
                "tags": ["software"],
            },
            {
                "integration-name": "MLOps serving",
                "external-doc-url": "https://mlflow.org/docs/latest/ml/deployment/",
                "tags": ["software"],
            },
        ],
        "operators": [
            {
                "integration-name": "MLOps datasets",
                "python-modules": [
                    "airflow_mlops.operators.ingest",
                    "airflow_mlops.operators.validation",
                    "airflow_mlops.operators.drift",
                ],
            },
            {"integration-name": "MLOps training", "python-modules": ["airflow_mlops.operators.training"]},
            {
                "integration-name": "MLflow",
                "python-modules": [
                    "airflow_mlops.operators.registry",
                    "airflow_mlops.operators.evaluation",
                    "airflow_mlops.operators.approval",
                ],
            },
            {
                "integration-name": "MLOps serving",
                "python-modules": [
                    "airflow_mlops.operators.deployment",
                    "airflow_mlops.operators.monitoring",
                    "airflow_mlops.operators.replay",
                    "airflow_mlops.operators.watch",
                ],
            },
        ],
        "sensors": [
            {"integration-name": "MLOps datasets", "python-modules": ["airflow_mlops.sensors.new_data"]},
        ],
        "triggers": [
            {"integration-name": "KServe", "python-modules": ["airflow_mlops.triggers.kserve"]},
            {"integration-name": "MLOps datasets", "python-modules": ["airflow_mlops.triggers.new_data"]},
            {"integration-name": "MLOps training", "python-modules": ["airflow_mlops.triggers.training"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.triggers.approval"]},
            {
                "integration-name": "MLOps serving",
                "python-modules": [
                    "airflow_mlops.triggers.canary",
                    "airflow_mlops.triggers.monitoring",
                    "airflow_mlops.triggers.release",
                    "airflow_mlops.triggers.watch",
                ],
            },
        ],
        "hooks": [
            {"integration-name": "MLflow", "python-modules": ["airflow_mlops.hooks.mlflow"]},
            {"integration-name": "KServe", "python-modules": ["airflow_mlops.hooks.kserve"]},
            {"integration-name": "MLOps datasets", "python-modules": ["airflow_mlops.hooks.storage"]},
            {"integration-name": "Apache Spark", "python-modules": ["airflow_mlops.hooks.spark"]},
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_mlops.hooks.mlflow.MLflowHook",
                "hook-name": "MLflow",
                "connection-type": "mlflow",
                "conn-fields": {
                    "registry_uri": {
                        "label": "Registry URI",
                        "description": "Model registry URI, if it differs from the tracking URI.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "token": {
                        "label": "Bearer token",
                        "description": "Sent as 'Authorization: Bearer'; leave empty for basic auth.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "verify_tls": {
                        "label": "Verify TLS certificates",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {"host": "Tracking URI", "login": "Username", "password": "Password"},
                    "placeholders": {"host": "http://mlflow:5000 or sqlite:///mlflow.db"},
                },
            },
            {
                "hook-class-name": "airflow_mlops.hooks.spark.SparkHook",
                "hook-name": "Spark session (MLOps)",
                "connection-type": "mlops_spark",
                "conn-fields": {
                    "app_name": {
                        "label": "Application name",
                        "schema": {"type": ["string", "null"]},
                    },
                    "conf": {
                        "label": "Spark settings",
                        "description": 'A JSON object of Spark settings, e.g. {"spark.executor.memory": "4g"}.',
                        "schema": {"type": ["object", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "extra"],
                    "relabeling": {
                        "host": "Spark Connect or master URL",
                        "login": "User",
                        "password": "Token",
                    },
                    "placeholders": {"host": "sc://spark-connect:15002 or local[2] or spark://master:7077"},
                },
            },
        ],
        "extra-links": [
            "airflow_mlops.links.MLflowRunLink",
            "airflow_mlops.links.MLflowModelVersionLink",
            "airflow_mlops.links.DataDocsLink",
        ],
        "config": {
            "mlops": {
                "description": "Bounds on what the MLOps operators read and release.",
                "options": {
                    "allowed_sources": {
                        "description": "Where ingests and new-data sensors may read: comma-separated local "
                        "directories and s3://bucket/prefix patterns (fnmatch globs allowed, e.g. "
                        "s3://team-*/incoming). A local source is resolved (symlinks, '..') before it is "
                        "matched. Empty: the data root ($MLOPS_DATA_ROOT, else ./.mlops-data) and the "
                        "demo data folder (the folder of $MLOPS_SOURCE_PATH, else ./data).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/srv/ml/incoming,s3://ml-landing/churn,s3://team-*/exports",
                        "default": "",
                    },
                    "max_source_files": {
                        "description": "Most files one ingest reads; a larger source fails before anything "
                        "is downloaded or hashed.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "50000",
                        "default": str(DEFAULT_MAX_SOURCE_FILES),
                    },
                    "max_source_bytes": {
                        "description": "Most bytes one ingest reads (sum of the listed sizes); a larger "
                        "source fails before anything is downloaded or hashed.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": str(100 * 1024**3),
                        "default": str(DEFAULT_MAX_SOURCE_BYTES),
                    },
                    "data_root": {
                        "description": "Where snapshots, validation results and training outputs are kept "
                        "when an operator gets no data_root: a local directory or s3://bucket/prefix. Empty: "
                        "the environment variable MLOPS_DATA_ROOT (the fallback trainers and processes outside "
                        "Airflow read too), else ./.mlops-data.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://ml-data/mlops",
                        "default": "",
                    },
                    "signing_conn_id": {
                        "description": "Airflow connection holding the key the package signs the gate, "
                        "approval, release and deployment records with (password: the secret, at least 32 "
                        "characters; login: the key id; extra previous_keys: earlier keys by id, still "
                        "accepted). See docs/security.md.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "mlops_signing_prod",
                        "default": "mlops_signing_default",
                    },
                    "require_approval": {
                        "description": "Promote, deploy and rollback refuse a model version that has no "
                        "passed evaluation gate and no recorded approval; set False only where no person "
                        "approves releases.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "release_wait_timeout": {
                        "description": "Seconds a rollback waits, deferred, for another task's release of the "
                        "same model (a deploy at its verify step, say) to end before it plans again; the default "
                        "outlasts the lease of a deploy with default settings (ready timeout + bake + 10 "
                        "minutes), so the release of a task that died is taken over. A shorter wait fails the "
                        "rollback while that release is live, changing nothing. The operators' wait_for_release "
                        "argument overrides it.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "1800",
                        "default": "3600",
                    },
                    "service_outage_timeout": {
                        "description": "Seconds a call to MLflow or S3 made through the package's hooks waits out "
                        "a server it cannot reach (connection refused or reset, a timeout, a 429 or 5xx), trying "
                        "again with backoff, before the task fails with a retryable error naming the server and "
                        "the time waited. The default outlasts a restart of a few minutes; 0 fails at once.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "600",
                        "default": "300",
                    },
                    "serving_max_body_bytes": {
                        "description": "Largest request body the local target's endpoint accepts (bytes); a "
                        "larger one is answered 413 before it is read. Read when a deploy starts the endpoint.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": str(64 * 1024 * 1024),
                        # The proxy's defaults (serving/proxy.py), written out: parsing a DAG loads no proxy.
                        "default": "8388608",
                    },
                    "serving_read_timeout": {
                        "description": "Seconds a request body may take to arrive at the local target's "
                        "endpoint; a slower one is answered 408. Read when a deploy starts the endpoint.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "10",
                        "default": "30",
                    },
                },
            }
        },
    }
