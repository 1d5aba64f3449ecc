"""The ``airflow-mlops`` command's own checks, before it talks to any server (the live tests drive the rest)."""

from __future__ import annotations

import pytest

from airflow_mlops.approvals import ApprovalClient
from airflow_mlops.cli import main
from tests.conftest import free_port


def test_the_command_lists_its_subcommands(capsys):
    assert main([]) == 2
    assert "usage: airflow-mlops {demo,lineage,approve,reject}" in capsys.readouterr().err


def test_approve_without_credentials_says_how_to_log_in(capsys, monkeypatch):
    for name in ("MLOPS_AIRFLOW_USER", "MLOPS_AIRFLOW_PASSWORD", "MLOPS_AIRFLOW_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["approve", "mlops_continuous_training", "manual__1", "--as", "reviewer"])
    assert exc.value.code == 2
    assert "log in with --as USER and a password (--password or $MLOPS_AIRFLOW_PASSWORD), or --token" in (
        capsys.readouterr().err
    )


def test_an_unreachable_airflow_is_named_and_the_password_is_not_shown(capsys, monkeypatch):
    monkeypatch.setenv("MLOPS_AIRFLOW_PASSWORD", "s3cret-pw")
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    assert main(["reject", "d", "r", "--as", "reviewer", "--url", url]) == 1
    out = capsys.readouterr()
    assert f"airflow-mlops reject: Cannot reach Airflow at {url}" in out.err
    assert "s3cret-pw" not in out.err + out.out
    assert "s3cret-pw" not in repr(ApprovalClient(url, user="reviewer", password="s3cret-pw"))


def test_demo_refuses_a_missing_dag_folder_and_the_worse_run_of_a_user_dag(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["demo", "--dags", str(tmp_path / "nowhere")])
    assert f"--dags {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--dags", str(tmp_path)])
    assert f"no DAG files in {tmp_path}" in capsys.readouterr().err
    (tmp_path / "my_pipeline.py").write_text("from airflow.sdk import DAG\n")
    with pytest.raises(SystemExit):
        main(["demo", "--dags", str(tmp_path), "--worse-run"])
    assert "--worse-run runs the package's example" in capsys.readouterr().err


def test_approve_help_says_what_each_exit_status_means(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["approve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--wait-timeout SECONDS" in out
    assert "--no-wait" in out
    assert "  0  the task accepted the answer" in out
    assert (
        "  3  refused: USER may not answer this request, or the task refused the answer (self-approval)"
        in out
    )
    assert "  4  the request was already answered, or someone else answered it meanwhile" in out
    assert "  6  the answer was recorded, but the task had not taken it within --wait-timeout" in out
