"""
docker-compose.yaml is checked for structure here (no Docker engine runs where the tests run): the services
exist and wire together, images are pinned, and the settings carry the same names as the embedded demo.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from airflow_mlops.demo.stack import LocalStack

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return dict(env) if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_the_stack_has_every_service_and_dependencies_resolve(compose):
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "airflow-init", *AIRFLOW_SERVICES} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }


def test_images_are_pinned_and_built_from_this_repository(compose):
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: unpinned image {image!r}"
        build = service.get("build")
        if build:
            dockerfile = REPO / build["context"] / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
    airflow_dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "COPY --chown=airflow:root airflow_mlops" in airflow_dockerfile
    assert re.search(r"apache-airflow==3\.3\.2", airflow_dockerfile), "the provider install must keep Airflow's pin"


def test_airflow_runs_on_postgres_with_the_example_dags_mounted(compose):
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        service = compose["services"][name]
        env = _env(service)
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert "./dags:/opt/airflow/dags" in service["volumes"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_mlflow_uses_postgres_and_s3_and_the_buckets_exist(compose):
    services = compose["services"]
    mlflow_command = services["mlflow"]["command"]
    assert "--backend-store-uri postgresql://" in mlflow_command
    bucket = re.search(r"--artifacts-destination s3://([\w.-]+)", mlflow_command).group(1)
    init = services["minio-init"]["entrypoint"]
    env = _env(services["airflow-scheduler"])
    data_bucket = env["MLOPS_DATA_ROOT"].removeprefix("s3://").split("/")[0]
    for needed in {bucket, data_bucket}:
        assert f"mc mb --ignore-existing local/{needed}" in init, f"bucket {needed} is never created"
    assert "mlflow" in (REPO / "docker" / "postgres-init.sql").read_text()


def test_settings_carry_the_same_names_as_the_embedded_demo(compose, tmp_path):
    embedded = LocalStack(tmp_path).settings()
    compose_env = _env(compose["services"]["airflow-scheduler"])
    shared = {name for name in embedded if name.startswith(("MLOPS_", "AIRFLOW_CONN_"))}
    assert shared, "the embedded demo defines no MLOPS_ settings"
    assert shared <= set(compose_env), f"missing in compose: {sorted(shared - set(compose_env))}"
    # Connections point at the compose services.
    assert "http://mlflow:5000" in compose_env["AIRFLOW_CONN_MLFLOW_DEFAULT"]
    assert "http://minio:9000" in compose_env["AIRFLOW_CONN_AWS_DEFAULT"]
    users = compose_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert compose_env["MLOPS_APPROVERS"] in users


def test_the_docs_describe_every_service(compose):
    page = (REPO / "docs" / "compose.md").read_text()
    for name in compose["services"]:
        assert f"`{name}`" in page, f"docs/compose.md does not mention {name}"
