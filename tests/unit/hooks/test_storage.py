"""StorageHook: the S3 client the Amazon provider builds from an ``aws`` connection, secrets kept out of logs."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.data.storage import Storage
from airflow_mlops.exceptions import ConnectionSetupError
from airflow_mlops.hooks.storage import StorageHook


class _Sent(Exception):
    """Raised from a botocore hook to stop a request after it was signed."""


def _signed_headers(client) -> dict[str, str]:
    """Headers of the request the client would send (nothing leaves the machine)."""
    seen: dict[str, str] = {}

    def capture(request, **_):
        seen.update({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
        raise _Sent

    client.meta.events.register("before-send.s3", capture)
    with pytest.raises(_Sent):
        client.list_buckets()
    return seen


def _aws_connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "aws", **fields}))


def test_hook_builds_client_from_connection(monkeypatch, capfd):
    _aws_connection(
        monkeypatch, "mlops_test_s3", login="AKIDFROMCONN", password="very-secret-key",
        extra={"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-3", "aws_session_token": "tok-123"},
    )  # fmt: skip
    storage = StorageHook(aws_conn_id="mlops_test_s3").get_conn()
    assert isinstance(storage, Storage)
    assert storage.s3.meta.endpoint_url == "http://127.0.0.1:9"
    assert storage.s3.meta.region_name == "eu-west-3"
    headers = _signed_headers(storage.s3)
    assert "Credential=AKIDFROMCONN/" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "tok-123"
    out, err = capfd.readouterr()
    assert "127.0.0.1:9" in out + err  # the hook logged which endpoint it uses...
    assert "very-secret-key" not in out + err
    assert "tok-123" not in out + err


def test_hook_reads_service_config_endpoint(monkeypatch):
    _aws_connection(
        monkeypatch, "mlops_test_s3_svc", login="a", password="b",
        extra={"endpoint_url": "http://127.0.0.1:8", "service_config": {"s3": {"endpoint_url": "http://127.0.0.1:7"}}},
    )  # fmt: skip
    assert (
        StorageHook(aws_conn_id="mlops_test_s3_svc").get_conn().s3.meta.endpoint_url == "http://127.0.0.1:7"
    )


def test_hook_without_connection_uses_boto3_defaults(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:6")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    client = StorageHook(aws_conn_id=None).get_conn().s3
    assert client.meta.endpoint_url == "http://127.0.0.1:6"
    assert "Credential=AKIDFROMENV/" in _signed_headers(client)["Authorization"]


def test_a_missing_aws_default_means_boto3_defaults_as_in_the_amazon_provider(monkeypatch):
    # The operators' default connection: a laptop without one keeps working with its environment's settings.
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:6")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")

    hook = StorageHook()  # aws_conn_id="aws_default", not defined

    assert hook.aws_conn_id == "aws_default"
    assert hook.connection_id is None
    client = hook.get_conn().s3
    assert client.meta.endpoint_url == "http://127.0.0.1:6"
    assert "Credential=AKIDFROMENV/" in _signed_headers(client)["Authorization"]
    assert json.loads(hook.describe())["credentials"] == "boto3 default chain"


def test_a_defined_aws_default_is_used(monkeypatch):
    _aws_connection(
        monkeypatch, "aws_default", login="AKIDFROMCONN", password="s",
        extra={"endpoint_url": "http://127.0.0.1:8"},
    )  # fmt: skip

    hook = StorageHook()

    assert hook.connection_id == "aws_default"
    assert "Credential=AKIDFROMCONN/" in _signed_headers(hook.get_conn().s3)["Authorization"]


def test_hook_names_missing_connection():
    with pytest.raises(ConnectionSetupError, match="'no_such_aws_conn' is not defined"):
        StorageHook(aws_conn_id="no_such_aws_conn").get_conn()


def test_hook_reads_the_connection_as_the_amazon_provider_does(monkeypatch):
    """A profile from a shared credentials file: an auth method only the Amazon provider's reading knows."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as creds:
        creds.write(
            "[mlops-team]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = profile-secret\n"
        )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", creds.name)
    monkeypatch.setenv("AWS_CONFIG_FILE", creds.name + ".absent")
    _aws_connection(
        monkeypatch, "mlops_test_s3_profile",
        extra={"profile_name": "mlops-team", "region_name": "eu-north-1", "endpoint_url": "http://127.0.0.1:5"},
    )  # fmt: skip
    hook = StorageHook(aws_conn_id="mlops_test_s3_profile")
    client = hook.get_conn().s3
    assert client.meta.region_name == "eu-north-1"
    assert "Credential=AKIDFROMPROFILE/" in _signed_headers(client)["Authorization"]
    assert json.loads(hook.describe())["credentials"] == "profile mlops-team"


def test_s3_without_the_amazon_provider_names_the_extra(monkeypatch, tmp_path):
    import sys

    _aws_connection(monkeypatch, "mlops_test_s3_no_amazon", login="a", password="b")
    monkeypatch.setitem(sys.modules, "airflow.providers.amazon.aws.hooks.s3", None)  # not installed
    hook = StorageHook(aws_conn_id="mlops_test_s3_no_amazon")
    with pytest.raises(ConnectionSetupError, match=r"airflow-provider-mlops\[amazon\]"):
        hook.get_conn()
    # Local files need neither the provider nor the connection.
    (tmp_path / "a.txt").write_bytes(b"local")
    assert hook.storage_for(str(tmp_path / "a.txt")).read_bytes(str(tmp_path / "a.txt")) == b"local"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"endpoint_url": "http://AKIDINURL:url-secret-9f2@127.0.0.1:9000"}, id="endpoint_url"),
        pytest.param(
            {
                "service_config": {
                    "s3": {"endpoint_url": "https://AKIDINURL:url-secret-9f2@minio.example.com"}
                }
            },
            id="service_config",
        ),
    ],
)
def test_hook_refuses_credentials_in_the_endpoint_url_without_repeating_them(monkeypatch, extra):
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    _aws_connection(monkeypatch, "mlops_test_s3_url_creds", extra=extra)

    with pytest.raises(ConnectionSetupError, match="carries credentials") as err:
        StorageHook(aws_conn_id="mlops_test_s3_url_creds").get_conn()
    assert "url-secret-9f2" not in str(err.value)
    assert "AKIDINURL" not in str(err.value)
    assert "url-secret-9f2" not in _secrets_masker().redact("endpoint http://AKIDINURL:url-secret-9f2@host")
