"""Deploy targets are JSON-describable, found by kind name or dotted path, and user targets plug in."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.deploy_targets import (
    Deployment,
    KServeTarget,
    LocalServerTarget,
    base,
    register_target_kind,
    target_from_config,
)
from tests.deploy_support import EchoTarget


@pytest.mark.parametrize(
    "target",
    [
        LocalServerTarget(port=6001, state_dir="/srv/serving", server_args=["--timeout", "120"]),
        KServeTarget(namespace="ml", gpus=1, canary_traffic_percent=10, storage_uri_map={"a:/": "s3://b/"}),
        EchoTarget(region="us-east-1"),
    ],
    ids=["local", "kserve", "user-target"],
)
def test_a_target_round_trips_through_json(target):
    config = json.loads(json.dumps(target.to_config()))

    rebuilt = target_from_config(config)

    assert type(rebuilt) is type(target)
    assert rebuilt.to_config() == target.to_config()


@pytest.fixture
def no_registered_kinds(monkeypatch):
    monkeypatch.setattr(base, "_REGISTERED_KINDS", {})


def test_built_in_kinds_are_short_names_and_user_targets_dotted_paths(no_registered_kinds):
    assert LocalServerTarget().to_config()["kind"] == "local"
    assert KServeTarget().to_config()["kind"] == "kserve"
    assert EchoTarget().to_config()["kind"] == "tests.deploy_support.EchoTarget"
    assert isinstance(target_from_config("local"), LocalServerTarget)
    assert isinstance(target_from_config('{"kind": "kserve", "namespace": "ml"}'), KServeTarget)


def test_a_user_target_can_be_registered_under_a_short_name(no_registered_kinds):
    register_target_kind("echo", "tests.deploy_support.EchoTarget")

    target = target_from_config({"kind": "echo", "region": "ap-south-1"})

    assert isinstance(target, EchoTarget)
    assert target.region == "ap-south-1"
    assert target.to_config()["kind"] == "echo"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "sagemaker"}, "Unknown deploy target kind 'sagemaker'"),
        ({"port": 5001}, "has no 'kind'"),
        ({"kind": "json.JSONDecoder"}, "not a DeployTarget subclass"),
        ({"kind": "no_such_pkg.Target"}, "cannot import"),
        ({"kind": "local", "prot": 5001}, "Invalid settings for deploy target local"),
        ({"kind": "local", "port": 70000}, "port of the local target"),
        (42, "got int"),
    ],
)
def test_bad_target_configs_say_what_is_allowed(config, message):
    with pytest.raises(ValueError, match=message):
        target_from_config(config)


def test_local_target_constructor_does_no_io(tmp_path):
    LocalServerTarget(state_dir=str(tmp_path / "not-created-yet"))

    assert not (tmp_path / "not-created-yet").exists()


def test_deployment_round_trips_through_json():
    deployment = Deployment("m", "3", "models:/m/3", "local", "http://127.0.0.1:5001", "2025-01-01T00:00:00+00:00",
                            details={"pid": 1})  # fmt: skip

    assert Deployment.from_dict(json.loads(json.dumps(deployment.to_dict()))) == deployment
