"""
A local trainer dies with its task: a real process running the ``local`` runtime is killed with SIGKILL (what
Airflow does to a task it gives up on), and nothing it started is left running once the task's next try
starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil
import pytest

from airflow_mlops.training.local import LocalRuntime, trainer_record_path
from airflow_mlops.training.spec import TrainingSpec
from tests.kill.support import REPO

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

#: A trainer that starts a helper of its own (a data loader, say), says so, and trains for a long time.
TRAINER = """
import subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[1], "w").write(f"{helper.pid}")
print("training", flush=True)
time.sleep(300)
"""

#: The task process in miniature: the local runtime running the trainer above, until it is killed.
TASK = """
import json, sys
from airflow_mlops.training.local import LocalRuntime
from airflow_mlops.training.spec import TrainingSpec

spec = TrainingSpec(**json.loads(sys.argv[1]))
LocalRuntime()._run(spec, {"PATH": "/usr/bin:/bin"})
"""


def spec_for(tmp_path: Path, entrypoint: tuple[str, ...]) -> TrainingSpec:
    return TrainingSpec(
        entrypoint=entrypoint, dag_id="d", dag_run_id="r", task_id="train", map_index=-1, try_number=1,
        mlflow_run_id="run", experiment_id="1", experiment_name="kill", instance_uri=str(tmp_path / "instance"),
    )  # fmt: skip


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s"
        time.sleep(0.1)


def test_a_killed_task_leaves_no_trainer_running_once_its_next_try_starts(tmp_path, caplog):
    helper_file = tmp_path / "helper.pid"
    spec = spec_for(tmp_path, (sys.executable, "-c", TRAINER, str(helper_file)))
    task = subprocess.Popen(
        [sys.executable, "-c", TASK, json.dumps(spec.to_dict())], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: helper_file.exists() and bool(helper_file.read_text()))
        helper = int(helper_file.read_text())
        (trainer,) = psutil.Process(task.pid).children()

        task.send_signal(signal.SIGKILL)
        task.wait(timeout=30)

        wait_for(lambda: not running(trainer.pid), timeout=15)  # the parent-death signal stopped it
        assert trainer_record_path(spec.instance_uri).exists()  # the record of its process group is left

        # The next try stops what the trainer left (its helper) before it starts the trainer again.
        retry = spec_for(tmp_path, (sys.executable, "-c", "print('done')"))
        LocalRuntime()._run(retry, {"PATH": os.environ["PATH"]})

        assert not running(helper)
        assert "Stopped 1 process(es) of a trainer an earlier try of this task left running" in caplog.text
        assert not trainer_record_path(spec.instance_uri).exists()
    finally:
        task.kill()
        task.wait()
        if helper_file.exists() and helper_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(helper_file.read_text()), signal.SIGKILL)
