"""
The stand-in's kubelet: what happens to each pod, scripted by a :class:`PodScript` or real.

A :class:`Pod` is a stored pod and its life: Pending for a while, then Running, then terminated; or OOMKilled,
Evicted, preempted, stuck in ImagePullBackOff or Unschedulable; gated while Kueue has not admitted it. With
``run_command=True`` the kubelet is real: it runs the container's command as a local process with the pod's
environment, and the process's output and result file become the container's log and XCom/termination message.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.kubernetes.server import now

if TYPE_CHECKING:
    from collections.abc import Callable

XCOM_PATH = "/airflow/xcom/return.json"
EMPTY_XCOM = "__airflow_xcom_result_empty__"
SIDECAR = "airflow-xcom-sidecar"


def image_digest(image: str) -> str:
    """The ``imageID`` the stand-in's kubelet reports for *image*: its repository at a digest of the name."""
    last = image.rsplit("/", 1)[-1]
    repository = image[: image.rindex(":")] if ":" in last else image
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


@dataclass
class PodScript:
    """
    What happens to a pod (see the module docstring).

    :param pending_seconds: Time in ``Pending`` (scheduled, containers creating) before the trainer runs.
    :param run_seconds: Time the trainer runs (ignored with ``run_command``).
    :param exit_code: The trainer's exit code.
    :param terminated_reason: The container's termination reason (default ``Completed`` / ``Error``);
        ``OOMKilled`` for an out-of-memory kill.
    :param logs: Lines the trainer prints, or a function of the pod's resolved environment returning them.
    :param result: What the trainer writes to ``/airflow/xcom/return.json``, or a function of the environment.
    :param waiting: ``(reason, message)``: the trainer container never starts (e.g. ``ImagePullBackOff``).
    :param unschedulable: Message of a ``PodScheduled=False`` condition: the pod is never scheduled.
    :param pod_failure: The pod fails when the trainer would end: ``{"reason", "message", "disruption"}``
        (``Evicted``; a ``DisruptionTarget`` condition for preemption).
    :param run_command: Run the container's command locally with the pod's environment (a real trainer).
    :param on_create: Called with the created pod (as stored) under the stub's lock.
    """

    pending_seconds: float = 0.2
    run_seconds: float = 0.3
    exit_code: int = 0
    terminated_reason: str | None = None
    logs: list[str] | Callable[[dict[str, str]], list[str]] = field(default_factory=list)
    result: dict[str, Any] | Callable[[dict[str, str]], dict[str, Any] | None] | None = None
    waiting: tuple[str, str] | None = None
    unschedulable: str | None = None
    pod_failure: dict[str, str] | None = None
    run_command: bool = False
    on_create: Callable[[dict[str, Any]], None] | None = None


class Pod:
    """A stored pod and its scripted (or real) life."""

    def __init__(self, obj: dict[str, Any], script: PodScript, env: dict[str, str], env_error: str | None):
        self.obj = obj
        self.script = script
        self.env = env
        self.env_error = env_error
        self.created = time.monotonic()
        self.created_at = now()
        self.sidecar_killed = False
        self.process: subprocess.Popen[bytes] | None = None
        self.output: list[tuple[str, str]] = []
        self.result_dir: Path | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None

    @property
    def has_sidecar(self) -> bool:
        return any(c["name"] == SIDECAR for c in self.obj["spec"]["containers"])

    @property
    def base(self) -> dict[str, Any]:
        return self.obj["spec"]["containers"][0]

    def lines(self) -> list[str]:
        logs = self.script.logs
        return list(logs(self.env) if callable(logs) else logs)

    def result(self) -> dict[str, Any] | None:
        if self.script.run_command:
            path = self.result_dir / "return.json" if self.result_dir else None
            return json.loads(path.read_text()) if path and path.is_file() else None
        result = self.script.result
        return result(self.env) if callable(result) else copy.deepcopy(result)

    # -- the kubelet, when it runs the command for real --------------------------------------------------------

    def start_process(self) -> None:
        if self.process is not None:
            return
        self.result_dir = Path(tempfile.mkdtemp(prefix="stub-pod-"))
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")}
        env.update(self.env)
        env["MLOPS_RESULT_PATH"] = str(self.result_dir / "return.json")  # the pod's /airflow/xcom mount
        command = list(self.base.get("command") or []) + list(self.base.get("args") or [])
        if command and command[0] == "python":
            command[0] = sys.executable
        elif command and command[0] == "torchrun":
            command[0] = str(Path(sys.executable).with_name("torchrun"))
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def pump() -> None:
            assert self.process is not None
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                self.output.append((now(), raw.decode("utf-8", "replace").rstrip("\n")))
            self.exit_code = self.process.wait()
            self.finished_at = now()

        threading.Thread(target=pump, daemon=True).start()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.result_dir is not None:
            shutil.rmtree(self.result_dir, ignore_errors=True)

    # -- status ------------------------------------------------------------------------------------------------

    @property
    def gated(self) -> bool:
        return bool(self.obj["spec"].get("schedulingGates"))

    def ungate(self) -> None:
        """Kueue admitted the pod: its gate goes and its life (scheduling, start) begins now."""
        self.obj["spec"].pop("schedulingGates", None)
        self.created = time.monotonic()
        self.created_at = now()

    def phase_of_trainer(self) -> tuple[str, int | None]:
        """``("gated" | "pending" | "waiting" | "running" | "done", exit_code)``."""
        script = self.script
        if self.gated:
            return "gated", None
        if script.unschedulable:
            return "unschedulable", None
        if self.env_error or script.waiting:
            return "waiting", None
        elapsed = time.monotonic() - self.created
        if elapsed < script.pending_seconds:
            return "pending", None
        if script.run_command:
            self.start_process()
            if self.exit_code is None:
                return "running", None
            return "done", self.exit_code
        if elapsed < script.pending_seconds + script.run_seconds:
            return "running", None
        return "done", script.exit_code

    def status(self) -> dict[str, Any]:
        script = self.script
        stage, code = self.phase_of_trainer()
        started = self.created_at
        image = self.base.get("image", "")
        statuses = []
        if stage == "gated":
            return {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated",
                                "message": "Scheduling is blocked due to non-empty scheduling gates",
                                "lastTransitionTime": started}],
            }  # fmt: skip
        if stage == "unschedulable":
            return {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": script.unschedulable, "lastTransitionTime": started}],
            }  # fmt: skip
        conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": started}]

        def container(name: str, image: str, state: dict[str, Any]) -> dict[str, Any]:
            # A started container's status names the image pulled, by digest (as containerd reports it).
            image_id = image_digest(image) if "running" in state or "terminated" in state else ""
            return {"name": name, "image": image, "imageID": image_id, "restartCount": 0,
                    "ready": "running" in state, "started": "running" in state, "state": state}  # fmt: skip

        sidecar_state: dict[str, Any] = {"running": {"startedAt": started}}
        if self.sidecar_killed:
            sidecar_state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started,
                                            "finishedAt": now()}}  # fmt: skip
        if stage == "pending":
            base_state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
            sidecar_state = {"waiting": {"reason": "ContainerCreating"}}
        elif stage == "waiting":
            if self.env_error:
                reason, message = "CreateContainerConfigError", self.env_error
            else:
                reason, message = script.waiting  # type: ignore[misc]
            base_state = {"waiting": {"reason": reason, "message": message}}
        elif stage == "running":
            base_state = {"running": {"startedAt": started}}
        else:
            finished = self.finished_at or now()
            reason = script.terminated_reason or ("Completed" if code == 0 else "Error")
            terminated: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": started,
                                          "finishedAt": finished}  # fmt: skip
            # The kubelet copies the termination message file into the status; the trainer writes its result to
            # MLOPS_RESULT_PATH, so the result is the message when both name the same file.
            message_path = self.base.get("terminationMessagePath") or "/dev/termination-log"
            if message_path == self.env.get("MLOPS_RESULT_PATH"):
                result = self.result()
                if result is not None:
                    terminated["message"] = json.dumps(result)
            base_state = {"terminated": terminated}
        if script.pod_failure and stage == "done":
            failure = script.pod_failure
            for name in (self.base["name"], SIDECAR):
                if name == SIDECAR and not self.has_sidecar:
                    continue
                statuses.append(container(name, image, {"terminated": {
                    "exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": now()}}))  # fmt: skip
            if failure.get("disruption"):
                conditions.append({"type": "DisruptionTarget", "status": "True",
                                   "reason": failure["disruption"], "message": failure.get("message", ""),
                                   "lastTransitionTime": now()})  # fmt: skip
            return {"phase": "Failed", "reason": failure.get("reason"), "message": failure.get("message"),
                    "conditions": conditions, "containerStatuses": statuses, "startTime": started}  # fmt: skip
        statuses.append(container(self.base["name"], image, base_state))
        if self.has_sidecar:
            statuses.append(container(SIDECAR, "alpine", sidecar_state))
        if stage in ("pending", "waiting"):
            phase = "Pending"
        elif stage == "running" or (self.has_sidecar and not self.sidecar_killed):
            phase = "Running"
        else:
            phase = "Succeeded" if code == 0 else "Failed"
        return {"phase": phase, "conditions": conditions, "containerStatuses": statuses, "startTime": started}

    def snapshot(self) -> dict[str, Any]:
        obj = copy.deepcopy(self.obj)
        obj["status"] = self.status()
        return obj

    def base_started(self) -> bool:
        return self.phase_of_trainer()[0] in ("running", "done")

    def base_done(self) -> bool:
        return self.phase_of_trainer()[0] == "done"

    def log_lines(self) -> list[tuple[str, str]]:
        if self.script.run_command:
            return list(self.output)
        return [(self.created_at, line) for line in self.lines()]
