"""
The storage hook's connection test asks STS who is calling (``GetCallerIdentity``, which needs no permission),
as the Amazon provider's does, against a real moto server; it never lists buckets.
"""

from __future__ import annotations

import pytest

from airflow_mlops.hooks.storage import StorageHook
from tests.conftest import free_port, set_connection

pytestmark = pytest.mark.integration


def test_the_connection_test_passes_for_a_role_that_may_not_list_buckets(s3_server, monkeypatch):
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    real_call = BaseClient._make_api_call

    def limited_role(client, operation, params):  # the fault: s3:ListAllMyBuckets is denied
        if operation == "ListBuckets":
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, operation)
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", limited_role)

    ok, message = StorageHook().test_connection()  # aws_default: the moto server through endpoint_url

    assert ok, message
    assert "'aws_default'" in message
    assert "arn:aws:" in message  # who the connection authenticates as


def test_an_unreachable_endpoint_fails_the_test_naming_the_connection():
    set_connection(
        "mlops_unreachable_aws", conn_type="aws", login="testing", password="testing",
        extra={"endpoint_url": f"http://127.0.0.1:{free_port()}", "region_name": "us-east-1"},
    )  # fmt: skip

    ok, message = StorageHook(aws_conn_id="mlops_unreachable_aws", outage_timeout=0).test_connection()

    assert not ok
    assert "'mlops_unreachable_aws'" in message


def test_a_connection_that_is_not_defined_fails_the_test_saying_so():
    ok, message = StorageHook(aws_conn_id="no_such_aws_conn").test_connection()

    assert not ok
    assert "'no_such_aws_conn' is not defined" in message
