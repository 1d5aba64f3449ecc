"""Training-side helpers for long trainings: preemption notice, ranks, system metrics, mounted result files."""

from __future__ import annotations

import errno
import json
import os
import signal

import pytest

from airflow_mlops.trainer import contract, lifecycle
from airflow_mlops.trainer.contract import TrainingContext
from airflow_mlops.trainer.lifecycle import EXIT_PREEMPTED, PreemptionGuard


def test_sigterm_becomes_a_flag_then_a_final_checkpoint_and_exit_143():
    before = signal.getsignal(signal.SIGTERM)
    saved = []
    with PreemptionGuard(on_preempt=lambda: saved.append("final checkpoint")) as guard:
        guard.exit_if_requested()  # nothing yet: training goes on
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested
        with pytest.raises(SystemExit) as exit_info:
            guard.exit_if_requested()

    assert exit_info.value.code == EXIT_PREEMPTED == 143
    assert saved == ["final checkpoint"]
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


def test_process_rank_reads_torchrun_variables(monkeypatch):
    assert lifecycle.process_rank() == (0, 0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")

    assert lifecycle.process_rank() == (3, 1, 4)
    assert not lifecycle.is_main_process()


def test_system_metrics_can_be_switched_off_by_the_environment(monkeypatch):
    import mlflow

    monkeypatch.setenv(lifecycle.SYSTEM_METRICS_ENV, "false")
    assert lifecycle.enable_system_metrics() is False

    monkeypatch.delenv(lifecycle.SYSTEM_METRICS_ENV)
    try:
        assert lifecycle.enable_system_metrics(sampling_interval=5) is True
    finally:
        mlflow.disable_system_metrics_logging()


def test_result_is_written_in_place_when_the_platform_mounted_the_file(tmp_path, monkeypatch):
    """A Kubernetes termination-message file is a bind mount: rename cannot replace it (EBUSY)."""
    mounted = tmp_path / "xcom" / "return.json"
    mounted.parent.mkdir()
    mounted.write_text("")
    environ = {name: "x" for name in contract.REQUIRED_VARS}
    environ.update({contract.PARAMS: "{}", contract.RESULT_PATH: str(mounted)})
    ctx = TrainingContext.from_env(environ)

    def busy(src, dst):
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "replace", busy)
    ctx.write_result({"run_id": "r", "model_uri": "m", "metrics": {}})

    assert json.loads(mounted.read_text()) == {"metrics": {}, "model_uri": "m", "run_id": "r"}
    assert [p.name for p in mounted.parent.iterdir()] == ["return.json"]  # no temporary file left
