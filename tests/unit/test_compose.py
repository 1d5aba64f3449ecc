"""
docker-compose.yaml is checked for structure here (no Docker engine runs where the tests run): the services
exist and wire together, images are pinned, the settings carry the same names as the embedded demo, and
``docker-compose config`` (Debian's docker-compose, which needs no engine for it) validates and resolves it
with the example env file, as it would be started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from airflow_mlops.demo.stack import LocalStack

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


LONG_RUNNING = ["postgres", "minio", "mlflow", *AIRFLOW_SERVICES]
_DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")


def _compose_config(env_file: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed (scripts/test.sh installs it: apt-get install docker-compose)"
        )
    # A clean environment: only the env file may supply the variables.
    return subprocess.run(
        [binary, "--project-directory", str(REPO), "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yaml"),
         "config"],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as ``docker-compose config`` resolves it with ``.env.example``."""
    result = _compose_config(REPO / ".env.example")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


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
        image = _DEFAULT.sub(r"\1", service.get("image", ""))
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: unpinned image {image!r}"
        build = service.get("build")
        if build:
            dockerfile = REPO / build["context"] / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
    airflow_dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "COPY --chown=airflow:root airflow_mlops" in airflow_dockerfile
    assert re.search(r"apache-airflow==3\.3\.2", airflow_dockerfile), (
        "the provider install must keep Airflow's pin"
    )


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
    assert "CREATE DATABASE mlflow" in (REPO / "docker" / "postgres-init.sh").read_text()


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


def test_docker_compose_validates_the_file_with_the_example_env(resolved):
    services = resolved["services"]
    example = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if "=" in line
        and not line.startswith("#")
    )  # fmt: skip
    for name in AIRFLOW_SERVICES:
        assert services[name]["user"] == f"{example['AIRFLOW_UID']}:0", name
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        assert services[name]["image"] == example["AIRFLOW_IMAGE_NAME"], name
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == example["AIRFLOW_JWT_SECRET"]
    assert f":{example['POSTGRES_PASSWORD']}@postgres" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert example["MINIO_ROOT_PASSWORD"] in env["AIRFLOW_CONN_AWS_DEFAULT"]
    assert f"mlflow:{example['MLFLOW_DB_PASSWORD']}@postgres" in services["mlflow"]["command"]


def test_without_an_env_file_compose_refuses_to_start_and_names_the_secret(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _compose_config(empty)
    assert result.returncode != 0
    assert "set in .env" in result.stderr
    assert re.search(r"(POSTGRES_PASSWORD|MINIO_ROOT_\w+|AIRFLOW_\w+|MLFLOW_DB_PASSWORD)", result.stderr)


def test_no_secret_is_written_in_the_compose_file_and_env_is_not_committed(compose):
    text = (REPO / "docker-compose.yaml").read_text()
    example = (REPO / ".env.example").read_text()
    secrets = [
        line.split("=", 1) for line in example.splitlines() if re.match(r"\w*(PASSWORD|SECRET)\w*=", line)
    ]
    assert secrets
    for name, value in secrets:
        assert value not in text, f"{name}'s value is written in docker-compose.yaml"
        assert f"${{{name}:?" in text, f"{name} is not required from the env file"
    assert "minioadmin" not in text
    # Every variable the file reads is in the example ($$ escapes a variable of the container's shell).
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert used <= {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_long_running_services_have_healthchecks_restart_and_are_waited_for(compose):
    services = compose["services"]
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "always", name
    assert "/api/v2/version" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    assert "DagProcessorJob" in " ".join(services["airflow-dag-processor"]["healthcheck"]["test"])
    assert "TriggererJob" in " ".join(services["airflow-triggerer"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert _env(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    # What a service waits for is healthy (or, for one-shot jobs, completed), not merely started.
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = "service_healthy" if dependency in LONG_RUNNING else "service_completed_successfully"
            assert condition["condition"] == expected, f"{name} -> {dependency}"
    for name in AIRFLOW_SERVICES:
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0", name
        assert services[name]["image"].startswith("${AIRFLOW_IMAGE_NAME:-"), name
