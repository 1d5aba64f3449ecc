"""Deploy targets are JSON-describable, found by kind name only, and user targets plug in through code."""

from __future__ import annotations

import json
import sys

import pytest

from airflow_mlops.deploy_targets import (
    Deployment,
    KServeTarget,
    LocalServerTarget,
    base,
    register_target_kind,
    target_from_config,
)
from tests.support.deploy import EchoTarget


@pytest.fixture
def no_registered_kinds(monkeypatch):
    monkeypatch.setattr(base, "_REGISTERED_KINDS", {})


@pytest.fixture
def echo_kind(no_registered_kinds):
    register_target_kind("echo", "tests.support.deploy.EchoTarget")


@pytest.mark.parametrize(
    "target",
    [
        LocalServerTarget(port=6001, state_dir="/srv/serving", server_args=["--timeout", "120"]),
        KServeTarget(namespace="ml", gpus=1, canary_traffic_percent=10, storage_uri_map={"a:/": "s3://b/"}),
        EchoTarget(region="us-east-1"),
    ],
    ids=["local", "kserve", "user-target"],
)
def test_a_target_round_trips_through_json(echo_kind, target):
    config = json.loads(json.dumps(target.to_config()))

    rebuilt = target_from_config(config)

    assert type(rebuilt) is type(target)
    assert rebuilt.to_config() == target.to_config()


def test_built_in_kinds_are_short_names(no_registered_kinds):
    assert LocalServerTarget().to_config()["kind"] == "local"
    assert KServeTarget().to_config()["kind"] == "kserve"
    assert isinstance(target_from_config("local"), LocalServerTarget)
    assert isinstance(target_from_config('{"kind": "kserve", "namespace": "ml"}'), KServeTarget)


def test_a_user_target_can_be_registered_under_a_short_name(no_registered_kinds):
    register_target_kind("echo", "tests.support.deploy.EchoTarget")

    target = target_from_config({"kind": "echo", "region": "ap-south-1"})

    assert isinstance(target, EchoTarget)
    assert target.region == "ap-south-1"
    assert target.to_config()["kind"] == "echo"
    assert base.available_kinds()["echo"] == "tests.support.deploy.EchoTarget"


def test_a_user_target_class_can_be_registered_under_any_short_name(no_registered_kinds):
    class SageMakerTarget(EchoTarget):
        kind = None

    register_target_kind("sagemaker", SageMakerTarget)

    target = target_from_config({"kind": "sagemaker", "region": "ap-south-1"})
    assert type(target) is SageMakerTarget
    assert target.to_config() == {"kind": "sagemaker", "region": "ap-south-1"}


def test_a_kind_from_the_entry_point_group_is_found(no_registered_kinds, monkeypatch):
    monkeypatch.setattr(base, "_entry_point_kinds", lambda: {"echo": "tests.support.deploy.EchoTarget"})

    assert isinstance(target_from_config({"kind": "echo"}), EchoTarget)
    assert EchoTarget().to_config()["kind"] == "echo"


@pytest.mark.parametrize(
    "kind",
    ["os.system", "subprocess.Popen", "tests.support.deploy.EchoTarget", "no_such_pkg_xyz.Target"],
)
def test_a_config_naming_a_dotted_path_is_refused_and_nothing_is_imported(no_registered_kinds, kind):
    module = kind.rpartition(".")[0]
    was_loaded = module in sys.modules

    with pytest.raises(ValueError, match="looks like a dotted path") as err:
        target_from_config({"kind": kind, "region": "eu-west-1"})

    message = str(err.value)
    assert "nothing was imported" in message
    assert "Kinds available: kserve, local." in message
    assert "register_target_kind(" in message
    assert "airflow_mlops.deploy_targets" in message
    assert (module in sys.modules) == was_loaded


def test_a_json_config_naming_a_dotted_path_is_refused(no_registered_kinds):
    with pytest.raises(ValueError, match="'os.system' looks like a dotted path"):
        target_from_config('{"kind": "os.system", "command": "touch /tmp/owned"}')


def test_an_unregistered_user_target_describes_itself_but_cannot_be_rebuilt(no_registered_kinds):
    config = EchoTarget().to_config()

    assert config["kind"] == "tests.support.deploy.EchoTarget"
    with pytest.raises(ValueError, match="register_target_kind"):
        target_from_config(config)


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("my.kind", "tests.support.deploy.EchoTarget", "no dots"),
        ("local", "tests.support.deploy.EchoTarget", "built in"),
        ("echo", "EchoTarget", "dotted path"),
        ("echo", dict, "not a DeployTarget subclass"),
    ],
)
def test_register_target_kind_refuses_bad_names_and_classes(no_registered_kinds, kind, target, message):
    with pytest.raises(ValueError, match=message):
        register_target_kind(kind, target)
    assert kind not in base._REGISTERED_KINDS or kind == "local"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "sagemaker"}, "Unknown deploy target kind 'sagemaker'. Kinds available: kserve, local"),
        ({"port": 5001}, "has no 'kind'"),
        ({"kind": "local", "prot": 5001}, "Invalid settings for deploy target local"),
        ({"kind": "local", "port": 70000}, "port of the local target"),
        (42, "got int"),
    ],
)
def test_bad_target_configs_say_what_is_allowed(no_registered_kinds, config, message):
    with pytest.raises(ValueError, match=message):
        target_from_config(config)


def test_a_registered_path_that_is_no_target_is_refused(no_registered_kinds):
    register_target_kind("decoder", "json.JSONDecoder")
    with pytest.raises(ValueError, match="not a DeployTarget subclass"):
        target_from_config({"kind": "decoder"})


def test_local_target_constructor_does_no_io(tmp_path):
    LocalServerTarget(state_dir=str(tmp_path / "not-created-yet"))

    assert not (tmp_path / "not-created-yet").exists()


def test_deployment_round_trips_through_json():
    deployment = Deployment("m", "3", "models:/m/3", "local", "http://127.0.0.1:5001", "2025-01-01T00:00:00+00:00",
                            details={"pid": 1})  # fmt: skip

    assert Deployment.from_dict(json.loads(json.dumps(deployment.to_dict()))) == deployment
