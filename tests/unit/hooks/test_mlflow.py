"""MLflowHook: how it reads a connection's URIs, with credentials written into them taken out."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.exceptions import ConnectionSetupError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import model_version_url, run_url
from airflow_mlops.utils.urls import split_credentials, without_credentials


def _mlflow_connection(monkeypatch, conn_id: str, **fields) -> MLflowHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mlflow", **fields}))
    return MLflowHook(mlflow_conn_id=conn_id)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://alice:p%40ss%3Aw@mlflow.example.com:8443/base",
            ("https://mlflow.example.com:8443/base", "alice", "p@ss:w"),
        ),
        ("http://alice@h:5000", ("http://h:5000", "alice", None)),
        ("http://:only-pw@h", ("http://h", None, "only-pw")),
        ("http://u:p@[::1]:5000/", ("http://[::1]:5000/", "u", "p")),
        ("sqlite:///tmp/mlflow.db", ("sqlite:///tmp/mlflow.db", None, None)),
        ("http://127.0.0.1:5000", ("http://127.0.0.1:5000", None, None)),
    ],
)
def test_user_info_is_split_from_a_url_and_percent_decoded(url, expected):
    assert tuple(split_credentials(url)) == expected
    assert "p@ss" not in repr(split_credentials(url))


def test_a_url_that_cannot_be_read_is_never_repeated():
    with pytest.raises(ValueError, match="percent-encoded") as err:
        split_credentials("https://alice:pa/ss@mlflow.example.com")
    assert "pa/ss" not in str(err.value)
    assert without_credentials("https://alice:pa/ss@mlflow.example.com") == "***"


def test_user_info_in_the_host_becomes_basic_auth_and_every_uri_shown_is_clean(monkeypatch):
    hook = _mlflow_connection(
        monkeypatch, "mlflow_url_creds", host="https://alice:pw-81c2@mlflow.example.com", port=8443,
        extra={"registry_uri": "https://alice:pw-81c2@registry.example.com"},
    )  # fmt: skip

    assert hook.tracking_uri == "https://mlflow.example.com:8443"
    assert hook.registry_uri == "https://registry.example.com"
    assert "pw-81c2" not in hook.describe()
    env = hook.child_env()
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "pw-81c2")
    assert "pw-81c2" not in env["MLFLOW_TRACKING_URI"] + env["MLFLOW_REGISTRY_URI"]


def test_a_host_without_scheme_keeps_the_schema_and_loses_its_user_info(monkeypatch):
    hook = _mlflow_connection(
        monkeypatch, "mlflow_bare_host", host="alice:pw-5d@mlflow.internal", schema="https"
    )

    assert hook.tracking_uri == "https://mlflow.internal"
    assert hook.child_env()["MLFLOW_TRACKING_PASSWORD"] == "pw-5d"


def test_the_password_of_a_url_is_masked_in_logs(monkeypatch):
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    hook = _mlflow_connection(
        monkeypatch, "mlflow_masked", host="https://alice:pw-masked-33@mlflow.example.com"
    )
    hook.tracking_uri  # noqa: B018 - reading the connection registers the mask

    assert "pw-masked-33" not in _secrets_masker().redact("request with pw-masked-33 failed")


def test_links_never_carry_user_info():
    uri = "https://alice:pw-link@mlflow.example.com"

    assert run_url(uri, "1", "abc") == "https://mlflow.example.com/#/experiments/1/runs/abc"
    assert model_version_url(uri, "churn", 2) == "https://mlflow.example.com/#/models/churn/versions/2"


def test_a_database_uri_with_a_password_is_refused_but_a_user_name_alone_is_kept(monkeypatch):
    refused = _mlflow_connection(monkeypatch, "mlflow_db_pw", host="postgresql://mlflow:db-pw-77@db/mlflow")
    with pytest.raises(ConnectionSetupError, match="PGPASSWORD") as err:
        refused.tracking_uri  # noqa: B018
    assert "db-pw-77" not in str(err.value)

    kept = _mlflow_connection(monkeypatch, "mlflow_db_user", host="postgresql://mlflow@db/mlflow")
    assert kept.tracking_uri == "postgresql://mlflow@db/mlflow"
