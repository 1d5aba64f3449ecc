"""StorageHook with an ``aws`` connection that assumes a role (``role_arn``), against the S3 server's own STS."""

from __future__ import annotations

import json
import uuid

import pytest

from airflow_mlops.hooks.storage import StorageHook
from tests.conftest import set_connection

pytestmark = pytest.mark.integration

ROLE_ARN = "arn:aws:iam::123456789012:role/mlops-snapshots"


@pytest.fixture
def role_connection(s3_server) -> str:
    """A connection with base keys and a role to assume; STS and S3 both served by the moto server."""
    conn_id = f"aws_role_{uuid.uuid4().hex[:8]}"
    set_connection(
        conn_id, conn_type="aws", login="AKIDBASEUSER", password="base-secret",
        extra={
            "role_arn": ROLE_ARN,
            "assume_role_kwargs": {"RoleSessionName": "mlops-test"},
            "region_name": "us-east-1",
            "endpoint_url": s3_server.endpoint_url,
            # The Amazon provider never sends assume-role to the global endpoint_url: STS gets its own.
            "service_config": {"sts": {"endpoint_url": s3_server.endpoint_url}},
        },
    )  # fmt: skip
    return conn_id


def test_s3_access_uses_the_assumed_role(s3_server, role_connection):
    import boto3

    bucket = f"mlops-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    hook = StorageHook(aws_conn_id=role_connection)
    storage = hook.get_conn()
    signed: list[str] = []
    storage.s3.meta.events.register(
        "before-send.s3", lambda request, **_: signed.append(request.headers["Authorization"].decode())
    )

    storage.write_bytes(f"s3://{bucket}/snap/part-0.csv", b"a,b\n1,2\n")
    assert storage.read_bytes(f"s3://{bucket}/snap/part-0.csv") == b"a,b\n1,2\n"

    # The requests were signed with the role's temporary keys, not the connection's base keys...
    assert signed
    assert all("AKIDBASEUSER" not in header for header in signed)
    credentials = storage.s3._request_signer._credentials.get_frozen_credentials()
    assert credentials.token
    # ...and STS says whose they are: the assumed role, with the session name from the connection.
    identity = boto3.client(
        "sts", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
        aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
    ).get_caller_identity()  # fmt: skip
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/mlops-snapshots/mlops-test"
    assert json.loads(hook.describe())["credentials"] == f"role {ROLE_ARN} (assume_role)"


def test_a_local_trainer_gets_the_assumed_roles_temporary_keys(s3_server, role_connection):
    """What TrainModelOperator passes to a local trainer: the role's session, never the base keys."""
    settings = StorageHook(aws_conn_id=role_connection)._settings
    assert settings["aws_access_key_id"] not in (None, "AKIDBASEUSER")
    assert settings["aws_secret_access_key"] not in (None, "base-secret")
    assert settings["aws_session_token"]
    assert settings["endpoint_url"] == s3_server.endpoint_url
    assert settings["region_name"] == "us-east-1"
