"""
The ``local`` training runtime: the trainer is a child process of the Airflow worker.

The trainer dies with its task: it runs in a process group of its own, which a task kill (``on_kill``) or a
timeout stops; on Linux it also gets SIGTERM when the task process dies without warning (SIGKILL, OOM:
``prctl(PR_SET_PDEATHSIG)``). What it started itself (its own children) is stopped by the task's next try: the
trainer's process group is recorded (in the temporary directory, by the task instance's output URI) and a try
that finds a recorded group still running stops it before it starts the trainer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.storage import is_local
from airflow_mlops.exceptions import TrainingError, TrainingResultError, TrainingTimeoutError
from airflow_mlops.training.base import TaskLog, TrainingCallbacks, TrainingRuntime
from airflow_mlops.utils.processes import set_parent_death_signal

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.training.spec import TrainingSpec

#: How many of a local trainer's last output lines a TrainingError quotes.
TAIL_LINES = 20
#: Seconds a local trainer gets to exit after SIGTERM before it is killed.
KILL_GRACE_SECONDS = 10.0
#: Where the running trainers' process groups are recorded (one file per task instance).
TRAINERS_DIR = "airflow-mlops-trainers"

_log = logging.getLogger(__name__)


class LocalRuntime(TrainingRuntime):
    """
    Run the trainer as a child process of the worker (``runtime="local"``).

    The child gets the spec's whole process environment (a minimal base environment, the MLflow and AWS
    connections' settings, the operator's ``env``, the contract) and nothing else; its output streams into the
    task log; the spec's ``timeout`` stops it; killing the task stops its whole process group.
    """

    name = "local"

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._stop_reason: str | None = None
        self._log: TaskLog = _log

    def __repr__(self) -> str:
        return "LocalRuntime()"

    def __deepcopy__(self, memo: dict[int, Any]) -> LocalRuntime:
        return LocalRuntime()  # holds no configuration, only the state of one run

    def start(self, spec: TrainingSpec, context: Context, callbacks: TrainingCallbacks) -> str | None:
        """Run the trainer to its end and return the text it wrote to ``MLOPS_RESULT_PATH`` (None: nothing)."""
        from airflow_mlops.trainer.contract import RESULT_PATH

        self._log = callbacks.log
        with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
            result_path = Path(tmp) / "result.json"
            env = {**spec.process_env, RESULT_PATH: str(result_path)}
            if is_local(spec.instance_uri):
                for name in ("output", "checkpoints"):
                    Path(spec.instance_uri, name).mkdir(parents=True, exist_ok=True)
            self._run(spec, env)
            if not result_path.is_file():
                return None
            try:
                return result_path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise TrainingResultError(
                    f"The result of the {spec.description} is not valid JSON: {err}",
                    model=spec.experiment_name,
                    reason="invalid-json",
                ) from err

    def _run(self, spec: TrainingSpec, env: dict[str, str]) -> None:
        """Run the trainer as a child process, streaming its output into the task log."""
        command = spec.command
        self._log.info("Starting trainer: %s", shlex.join(command))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._stop_reason = None
        entrypoint = spec.entrypoint if isinstance(spec.entrypoint, str) else list(spec.entrypoint)
        record = trainer_record_path(spec.instance_uri)
        stop_recorded_trainer(record, self._log)
        try:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                start_new_session=True,  # its own process group, so stopping it stops its children too
                preexec_fn=set_parent_death_signal,  # and it dies with the task process (Linux)
            )
        except OSError as err:
            raise TrainingError(
                f"Cannot start training entrypoint {entrypoint!r} of task {spec.task_id!r}: {err}",
                model=spec.experiment_name,
            ) from err
        self._process = process
        self._log.info("Trainer started (pid %s, its own process group)", process.pid)
        _record_trainer(record, process.pid)
        timer = None
        timed_out = threading.Event()
        if spec.timeout is not None:

            def on_timeout() -> None:
                timed_out.set()
                self._stop_child(f"it ran longer than its timeout of {spec.timeout:g} s")

            timer = threading.Timer(spec.timeout, on_timeout)
            timer.daemon = True
            timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self._log.info("[trainer] %s", line)
            returncode = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
            self._process = None
            _stop_group(process.pid)  # what the trainer left running (its own children)
            record.unlink(missing_ok=True)
        if returncode != 0 or self._stop_reason:
            if self._stop_reason:
                how = f"was stopped because {self._stop_reason} (exit code {returncode})"
            elif returncode < 0:
                how = f"was killed by signal {-returncode}"
            else:
                how = f"exited with code {returncode}"
            output = "\n".join(tail) or "(no output)"
            error = TrainingTimeoutError if timed_out.is_set() else TrainingError
            raise error(
                f"Training entrypoint {entrypoint!r} of task {spec.task_id!r} {how}. "
                f"Last {len(tail)} lines of its output:\n{output}",
                model=spec.experiment_name,
                reason="timeout" if timed_out.is_set() else f"exit code {returncode}",
            )

    def stop(self) -> None:
        """Stop the trainer's process group (the task was killed)."""
        self._stop_child("the task was killed")

    def _stop_child(self, reason: str) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._stop_reason = reason
        self._log.warning("Stopping trainer (process group %s): %s", process.pid, reason)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- the record of a running trainer ---------------------------------------------------------------------


def trainer_record_path(instance_uri: str) -> Path:
    """Where the trainer of the task instance writing to *instance_uri* is recorded (stable across tries)."""
    digest = hashlib.sha256(instance_uri.encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / TRAINERS_DIR / f"{digest}.json"


def _create_time(pid: int) -> float | None:
    import psutil  # type: ignore[import-untyped]

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _record_trainer(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pgid": pid, "create_time": _create_time(pid)}), encoding="utf-8")


def _group_members(pgid: int) -> list[Any]:
    import psutil

    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def _stop_group(pgid: int, grace: float = KILL_GRACE_SECONDS) -> int:
    """SIGTERM, then after *grace* seconds SIGKILL, every process of group *pgid*; return how many ran."""
    import psutil

    members = _group_members(pgid)
    if not members:
        return 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        _, alive = psutil.wait_procs(members, timeout=grace)
        if not alive:
            break
    return len(members)


def stop_recorded_trainer(path: Path, task_log: TaskLog = _log) -> int:
    """
    Stop the trainer process group an earlier try of this task instance recorded at *path*, if it still runs.

    :return: How many processes of it were running (0: none).
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pgid = int(record["pgid"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    path.unlink(missing_ok=True)
    if pgid <= 1 or pgid == os.getpgid(0):
        return 0
    created = _create_time(pgid)
    if created is not None and record.get("create_time") and abs(created - float(record["create_time"])) >= 1:
        return 0  # the leader's pid was reused by another process
    stopped = _stop_group(pgid)
    if stopped:
        task_log.warning(
            "Stopped %s process(es) of a trainer an earlier try of this task left running (process group %s)",
            stopped,
            pgid,
        )
    return stopped
