"""The local target's settings never make a model server listen beyond loopback. No server is started."""

from __future__ import annotations

import pytest

from airflow_mlops.serving import local
from airflow_mlops.serving.base import target_from_config
from airflow_mlops.serving.local import LocalServerTarget


@pytest.mark.parametrize(
    ("server_args", "refused"),
    [
        (["-h", "0.0.0.0"], "'-h'"),
        (["--timeout", "120", "--host", "::"], "'--host'"),
        (["--host=0.0.0.0"], "'--host=0.0.0.0'"),
        (["-h0.0.0.0"], "'-h0.0.0.0'"),
    ],
)
def test_server_args_naming_a_host_are_refused_pointing_at_the_host_setting(tmp_path, server_args, refused):
    config = {"kind": "local", "state_dir": str(tmp_path), "server_args": server_args}

    with pytest.raises(ValueError, match=f"server_args of the local target may not contain {refused}") as err:
        target_from_config(config)

    assert "always listens on 127.0.0.1" in str(err.value)
    assert "the target's own 'host' setting" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("server_args", "setting"),
    [
        (["-p", "80"], "'port' setting"),
        (["--port=80"], "'port' setting"),
        (["-m", "/tmp/other-model"], "version being deployed"),
        (["--model-uri", "runs:/abc/model"], "version being deployed"),
        (["--enable-mlserver"], "every interface"),
    ],
)
def test_server_args_setting_what_the_target_owns_are_refused(server_args, setting):
    with pytest.raises(ValueError, match=setting):
        LocalServerTarget(server_args=server_args)


def test_other_server_args_are_kept():
    target = target_from_config({"kind": "local", "server_args": ["--timeout", "120", "-t", "30"]})

    assert target.server_args == ["--timeout", "120", "-t", "30"]


def test_server_args_changed_after_construction_are_refused_before_any_process_starts(tmp_path):
    target = LocalServerTarget(state_dir=str(tmp_path))
    target.server_args.extend(["-h", "0.0.0.0"])
    children = dict(local._CHILDREN)

    with pytest.raises(ValueError, match="may not contain '-h'"):
        target.deploy("churn", "1", "models:/churn/1")

    assert local._CHILDREN == children
    assert not (tmp_path / "churn" / "state.json").exists()
