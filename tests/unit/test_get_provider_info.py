"""The package registers as an Airflow provider with its hook, connection type and UI fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_airflow_lists_the_provider_with_its_mlflow_connection_type():
    from airflow.providers_manager import ProvidersManager

    from airflow_mlops.version_compat import AIRFLOW_V_3_2_PLUS

    assert "airflow-provider-mlops" in ProvidersManager().providers
    if AIRFLOW_V_3_2_PLUS:  # tasks look hooks up through the task SDK's own providers manager
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hook_info = ProvidersManagerTaskRuntime().hooks["mlflow"]
    else:
        hook_info = ProvidersManager().hooks["mlflow"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_mlops.hooks.mlflow.MLflowHook"
    assert hook_info.connection_id_attribute_name == "mlflow_conn_id"


def test_connection_form_is_declared_in_provider_metadata():
    from airflow_mlops.get_provider_info import get_provider_info

    types = {entry["connection-type"]: entry for entry in get_provider_info()["connection-types"]}
    assert set(types) == {"mlflow", "mlops_spark"}
    conn_type = types["mlflow"]
    assert set(conn_type["conn-fields"]) == {"registry_uri", "token", "verify_tls"}
    assert conn_type["conn-fields"]["token"]["schema"]["format"] == "password"
    assert conn_type["ui-field-behaviour"]["relabeling"]["host"] == "Tracking URI"
    spark = types["mlops_spark"]
    assert spark["hook-class-name"] == "airflow_mlops.hooks.spark.SparkHook"
    assert spark["ui-field-behaviour"]["relabeling"]["password"] == "Token"


_HOOK_META = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
(meta,) = [hook for hook in HookMetaService.hook_meta_data() if hook.connection_type == "mlflow"]
print(json.dumps(meta.model_dump(mode="json")))
"""


def test_the_connection_form_shows_the_mlflow_fields_in_the_ui():
    """What the UI's connection form gets (the API's hook metadata): 3.2+ from conn-fields, 3.1 from the hook."""
    # A fresh process: the API builds this from a providers manager that nothing has initialised yet.
    out = subprocess.run([sys.executable, "-c", _HOOK_META], capture_output=True, text=True, check=True)
    meta = json.loads(out.stdout.strip().splitlines()[-1])
    extra = meta["extra_fields"]
    assert set(extra) == {"registry_uri", "token", "verify_tls"}
    assert extra["registry_uri"]["schema"]["title"] == "Registry URI"
    assert extra["token"]["schema"]["format"] == "password"
    assert extra["verify_tls"]["schema"]["type"] == ["boolean", "null"]
    assert extra["verify_tls"]["value"] is True
    fields = meta["standard_fields"]
    assert fields["host"]["title"] == "Tracking URI"
    assert fields["host"]["placeholder"] == "http://mlflow:5000 or sqlite:///mlflow.db"
    assert fields["port"]["hidden"]
    assert fields["url_schema"]["hidden"]
    assert fields["login"]["title"] == "Username"


def test_airflow_providers_cli_shows_the_provider():
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert '"airflow-provider-mlops"' in out.stdout


def test_extra_links_are_registered_and_point_at_the_mlflow_ui():
    from airflow.providers_manager import ProvidersManager

    from airflow_mlops.links import model_version_url, run_url

    links = set(ProvidersManager().extra_links_class_names)
    assert {"airflow_mlops.links.MLflowRunLink", "airflow_mlops.links.MLflowModelVersionLink"} <= links
    assert run_url("http://mlflow:5000/", "3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"
    assert model_version_url("https://m", "churn model", 7) == "https://m/#/models/churn%20model/versions/7"
    assert run_url("sqlite:///mlflow.db", "3", "abc") == ""  # no UI to link to


def test_the_mlops_config_section_is_declared_and_read_by_airflow():
    from airflow_mlops.get_provider_info import get_provider_info
    from airflow_mlops.version_compat import AIRFLOW_V_3_2_PLUS, conf

    options = get_provider_info()["config"]["mlops"]["options"]
    assert set(options) == {
        "allowed_sources", "max_source_files", "max_source_bytes", "require_approval", "data_root",
        "signing_conn_id", "release_wait_timeout", "service_outage_timeout", "serving_max_body_bytes",
        "serving_read_timeout",
    }  # fmt: skip
    for option in options.values():
        assert set(option) == {"description", "version_added", "type", "example", "default"}
        assert isinstance(option["default"], str)
    # Airflow's own configuration knows the defaults (the environment of these tests sets none of them).
    if not AIRFLOW_V_3_2_PLUS:  # 3.1 loads providers' configuration when its CLI or a service starts
        from airflow.providers_manager import ProvidersManager

        ProvidersManager().initialize_providers_configuration()
    assert conf.getint("mlops", "max_source_files") == 10_000
    assert conf.getint("mlops", "max_source_bytes") == 10 * 1024**3
    assert conf.getboolean("mlops", "require_approval") is True
    assert conf.get("mlops", "signing_conn_id") == "mlops_signing_default"
    from airflow_mlops.serving.proxy import DEFAULT_MAX_BODY_BYTES, DEFAULT_READ_TIMEOUT

    # What the local target passes to the endpoint proxy by default is the proxy's own default.
    assert conf.getint("mlops", "serving_max_body_bytes") == DEFAULT_MAX_BODY_BYTES == 8 * 1024 * 1024
    assert conf.getfloat("mlops", "serving_read_timeout") == DEFAULT_READ_TIMEOUT == 30.0


def test_every_mlops_option_the_package_reads_is_declared():
    import re

    from airflow_mlops.get_provider_info import get_provider_info

    package = Path(__file__).resolve().parents[2] / "airflow_mlops"
    read = set()
    for path in package.rglob("*.py"):
        read |= set(re.findall(r'conf\.get\w*\(\s*"mlops",\s*"(\w+)"', path.read_text()))
    assert read
    assert read == set(get_provider_info()["config"]["mlops"]["options"])


def test_the_data_root_option_wins_over_its_environment_fallback(monkeypatch, tmp_path):
    from airflow_mlops.data.snapshots import resolve_data_root

    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path / "from-env"))
    assert resolve_data_root() == str(tmp_path / "from-env")
    monkeypatch.setenv("AIRFLOW__MLOPS__DATA_ROOT", "s3://ml-data/mlops/")
    assert resolve_data_root() == "s3://ml-data/mlops"
    assert resolve_data_root(str(tmp_path / "given")) == str(tmp_path / "given")


def test_every_operator_sensor_trigger_and_hook_module_is_listed_and_imports():
    import importlib

    from airflow_mlops.get_provider_info import get_provider_info

    info = get_provider_info()
    package = Path(__file__).resolve().parents[2] / "airflow_mlops"
    for kind in ("operators", "sensors", "triggers", "hooks"):
        listed = {module for entry in info[kind] for module in entry["python-modules"]}
        on_disk = {
            f"airflow_mlops.{kind}.{path.stem}"
            for path in (package / kind).glob("*.py")
            if not path.stem.startswith("_") and path.stem != "base"
        }
        assert listed == on_disk, kind
        for module in listed:
            importlib.import_module(module)
    integrations = {entry["integration-name"] for entry in info["integrations"]}
    used = {
        entry["integration-name"]
        for kind in ("operators", "sensors", "triggers", "hooks")
        for entry in info[kind]
    }
    assert used <= integrations
    for link in info["extra-links"]:
        module, name = link.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name)
