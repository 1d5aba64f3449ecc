"""SparkHook: a SparkSession from an Airflow connection (a master URL or Spark Connect), secrets kept out."""

from __future__ import annotations

import sys

import pytest

from airflow_mlops.exceptions import ConnectionSetupError
from airflow_mlops.hooks.spark import SparkHook
from tests.conftest import set_connection


def test_a_master_url_connection_gives_a_working_session(spark_default):
    hook = SparkHook()
    ok, message = hook.test_connection()
    assert ok, message
    assert "local[1]" in message
    assert hook.get_conn().sql("SELECT 40 + 2 AS answer").collect()[0]["answer"] == 42


def test_a_spark_connect_token_is_sent_but_never_shown():
    set_connection(
        "spark_connect", conn_type="mlops_spark", host="sc://spark.example:443/;use_ssl=true",
        login="alice", password="s3cr3t-token",
    )  # fmt: skip
    hook = SparkHook(spark_conn_id="spark_connect")
    assert hook.settings["remote"] == "sc://spark.example:443/;use_ssl=true;token=s3cr3t-token;user_id=alice"
    assert "s3cr3t-token" not in hook.describe
    assert hook.describe == "sc://spark.example:443/;use_ssl=true;token=***;user_id=alice"


def test_the_apache_spark_providers_connections_work_as_they_are():
    set_connection("connect", conn_type="spark_connect", host="connect.example")
    assert SparkHook(spark_conn_id="connect").settings["remote"] == "sc://connect.example:15002/"
    set_connection("standalone", conn_type="spark", host="master.example", port=7077)
    assert SparkHook(spark_conn_id="standalone").settings["master"] == "spark://master.example:7077"


def test_a_host_that_is_no_spark_url_fails_naming_what_is_allowed():
    set_connection("bad_spark", conn_type="mlops_spark", host="http://spark.example")
    with pytest.raises(ConnectionSetupError, match=r"neither a Spark Connect URL .*local, spark, yarn, k8s"):
        SparkHook(spark_conn_id="bad_spark").get_conn()


def test_a_missing_connection_says_how_to_create_one():
    with pytest.raises(ConnectionSetupError, match="'no_such_spark' is not defined.*sc://host:15002"):
        SparkHook(spark_conn_id="no_such_spark").settings  # noqa: B018


def test_without_pyspark_the_error_names_the_extra_to_install(monkeypatch):
    set_connection("spark_default", conn_type="mlops_spark", host="local[1]")
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # as if pyspark were not installed
    with pytest.raises(ConnectionSetupError, match=r"pip install 'airflow-provider-mlops\[spark\]'"):
        SparkHook().get_conn()
