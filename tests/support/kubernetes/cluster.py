"""
A stand-in for the Kubernetes API server (and a tiny kubelet and Job controller), for the training runtime tests.

A threaded ``http.server`` on loopback that serves the REST paths ``KubernetesPodOperator``,
``KubernetesJobOperator``, their triggers and the kubernetes clients (sync and asyncio) use for training:

- pods: create, read, list by label selector, merge-patch (labels), delete; ``/log`` (``follow`` answers once
  the container ended; ``timestamps`` prefixes RFC 3339 times); ``/exec`` over a real WebSocket
  (``v4.channel.k8s.io`` framing), which is how KPO's XCom sidecar hands back ``/airflow/xcom/return.json``
  and is then stopped;
- events: list (a watch is refused with 403, so clients fall back to polling, as with a restrictive RBAC);
- batch/v1 Jobs: create (the "controller" creates the Indexed Job's pods at once, with their completion
  index, hostname and subdomain), read, status, list, delete (with its pods and the Services it owns);
- services: create, read, delete;
- Kubeflow Trainer ``trainer.kubeflow.org/v1alpha1`` TrainJobs (custom objects: create, read, list, delete),
  each validated against the Trainer CRD schema (strict) and its ``runtimeRef`` against
  :data:`TRAINING_RUNTIMES`; the Trainer and JobSet controllers: a ``jobset.x-k8s.io/v1alpha2`` JobSet (read,
  list) of ``numNodes`` pods with the torch runtime's ``PET_*`` variables, and the TrainJob's ``Created``,
  ``Suspended``, ``Complete`` (``AllJobsCompleted``) and ``Failed`` (``FailedJobs``) conditions from its pods;
- Kueue: a Job or TrainJob created suspended, or a pod (gated ``kueue.x-k8s.io/admission`` by the "webhook"),
  labelled ``kueue.x-k8s.io/queue-name`` is admitted once its queue has quota (:attr:`KubePodStub.queues`:
  that many API requests after its creation), else never; admission unsuspends it (or removes the gate) and its pods start then.

Every created Pod, Job and Service is validated against the official Kubernetes JSON schemas of 1.30 and the
newest version ``kubernetes-validate`` ships (strict: unknown fields are errors), plus object names and label
keys/values as the API server checks them; an invalid object gets HTTP 422, as from a real API server.

What happens to a pod is scripted by a :class:`PodScript` (Pending for a while, then Running, then
terminated; or OOMKilled, Evicted, preempted, stuck in ImagePullBackOff or Unschedulable). With
``run_command=True`` the stub plays the kubelet for real: it runs the container's command as a local process
with the pod's environment (Secret references resolved from :attr:`KubePodStub.secrets`), and the process's
output and result file become the container's log and XCom/termination message.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import secrets as _secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.support.kubernetes.api_server import TOKEN, StubServer, apply_merge_patch, trainjob_validators

if TYPE_CHECKING:
    from collections.abc import Callable

XCOM_PATH = "/airflow/xcom/return.json"
EMPTY_XCOM = "__airflow_xcom_result_empty__"
SIDECAR = "airflow-xcom-sidecar"
SCHEMA_VERSIONS = ("1.30.0", None)  # None: the newest version kubernetes-validate ships
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(?:/(log|exec|status))?$")
_EVENTS = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")
_SERVICE = re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$")
_JOB = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(?:/(status))?$")
_TRAINJOB = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")
_JOBSET = re.compile(r"^/apis/jobset\.x-k8s\.io/v1alpha2/namespaces/([^/]+)/jobsets(?:/([^/]+))?$")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GATE = "kueue.x-k8s.io/admission"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
#: The (Cluster)TrainingRuntimes the stand-in's cluster has: name -> (kind, image of the ``node`` container),
#: as in Kubeflow Trainer's manifests/base/runtimes/torch_distributed.yaml.
TRAINING_RUNTIMES = {
    "torch-distributed": ("ClusterTrainingRuntime", "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime")
}
_TORCH_PORT = 29400


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def latest_schema_version() -> str:
    import kubernetes_validate

    return kubernetes_validate.latest_version()


def schema_versions() -> list[str]:
    return [version or latest_schema_version() for version in SCHEMA_VERSIONS]


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Errors of *obj* against the Kubernetes schemas (1.30 and newest, strict) and API-server name rules."""
    import kubernetes_validate

    errors: list[str] = []
    for version in schema_versions():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = "/".join(map(str, getattr(err, "path", None) or []))
            errors.append(
                f"{obj.get('kind')} invalid for Kubernetes {version} at {path or '/'}: {err.message}"
            )
    errors += check_metadata(obj.get("metadata") or {}, obj.get("kind", ""))
    for path, meta in _nested_metadata(obj):
        errors += [f"{path}: {e}" for e in check_metadata(meta, "template")]
    return errors


def _nested_metadata(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata")
    return [("spec.template.metadata", template)] if template else []


def check_metadata(meta: dict[str, Any], kind: str) -> list[str]:
    errors = []
    name = meta.get("name")
    if name is not None:
        pattern = _DNS1035 if kind == "Service" else _DNS_LABEL if kind == "Job" else _DNS_SUBDOMAIN
        limit = 63 if kind in ("Service", "Job") else 253
        if not pattern.match(name) or len(name) > limit:
            errors.append(f"metadata.name {name!r} is not a valid {kind} name")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(label) or len(label) > 63:
            errors.append(f"label key {key!r} is invalid")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63:
            errors.append(f"label {key}={value!r}: invalid label value")
    for key in meta.get("annotations") or {}:
        prefix, _, label = key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(label):
            errors.append(f"annotation key {key!r} is invalid")
    return errors


def matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selector: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma-separated."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


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


class _Pod:
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
            return {"name": name, "image": image, "imageID": "", "restartCount": 0,
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


class KubePodStub(StubServer):
    """See the module docstring. Use as a context manager, or call :meth:`close`."""

    def __init__(self, validate: bool = True) -> None:
        self.lock = threading.RLock()
        self.validate = validate
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.trainjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobsets: dict[tuple[str, str], dict[str, Any]] = {}
        #: Kueue: LocalQueue name -> API requests (to any path) after a workload on it was created until Kueue
        #: admits it (counted in requests, not seconds, so a loaded machine does not change the story); a
        #: workload on a queue not listed here is never admitted (no quota).
        self.queues: dict[str, int] = {}
        self._requests_served = 0
        self.admitted: list[tuple[str, str, str]] = []  # (kind, name, queue) in the order Kueue admitted them
        self._queued_since: dict[tuple[str, str, str], int] = {}
        self._trainjob_validators = trainjob_validators() if validate else None
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.scripts: list[PodScript] = []
        self.default_script = PodScript()
        self.created: list[dict[str, Any]] = []  # every object created through the API, as sent
        self.deleted: list[tuple[str, str, str]] = []  # (kind, namespace, name)
        self.rejected: list[str] = []  # why each invalid object was refused
        self.requests: list[tuple[str, str]] = []
        self._rv = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v for k, v in parse_qs(parts.query).items()}
                stub.requests.append((self.command, parts.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, stub.status(401, "Unauthorized", "no or wrong bearer token"))
                    return
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    stub.exec_websocket(self, parts.path, query)
                    return
                body = json.loads(raw) if raw else None
                code, payload, content_type = stub.route(self.command, parts.path, query, body)
                self._send(code, payload, content_type)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        for pod in list(self.pods.values()):
            pod.kill()
        super().close()

    def script_pods(self, *scripts: PodScript) -> None:
        """The next pods created get these scripts in order; later ones get the last (or the default)."""
        with self.lock:
            self.scripts = list(scripts)

    def live(self, kind: str = "Pod") -> list[str]:
        """Names of the objects of *kind* that exist now."""
        store = {"Pod": self.pods, "Job": self.jobs, "Service": self.services, "TrainJob": self.trainjobs,
                 "JobSet": self.jobsets}[kind]  # fmt: skip
        with self.lock:
            return sorted(name for _, name in store)

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """A pod as the API serves it now."""
        with self.lock:
            return self.pods[(namespace, name)].snapshot()

    def kill_pod(self, name: str, namespace: str = "default") -> None:
        """Take the pod away (preemption that deletes it): the next read is a 404."""
        with self.lock:
            self.pods.pop((namespace, name)).kill()

    # -- API ---------------------------------------------------------------------------------------------------

    @staticmethod
    def status(code: int, reason: str, message: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, "code": code}  # fmt: skip

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any, str]:
        json_type = "application/json"
        with self.lock:
            self._kueue()
            if m := _TRAINJOB.match(path):
                code, payload = self._trainjobs(method, *m.groups(), query, body)
            elif m := _JOBSET.match(path):
                code, payload = self._jobsets(method, *m.groups(), query)
            elif m := _POD.match(path):
                namespace, name, sub = m.groups()
                if sub == "log":
                    return self._log(namespace, name, query)
                code, payload = self._pods(method, namespace, name, query, body)
            elif m := _EVENTS.match(path):
                code, payload = self._events(m.group(1), query)
            elif m := _JOB.match(path):
                code, payload = self._jobs(method, *m.groups(), query, body)
            elif m := _SERVICE.match(path):
                code, payload = self._services(method, *m.groups(), body)
            else:
                code, payload = (
                    404,
                    self.status(404, "NotFound", f"{method} {path} is not served by the stub"),
                )
        return code, payload, json_type

    def _invalid(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        if not self.validate:
            return None
        errors = validate_object(obj)
        if not errors:
            return None
        self.rejected.extend(errors)
        return self.status(422, "Invalid", f"{obj.get('kind')} is invalid: " + "; ".join(errors[:5]))

    def _resolve_env(self, namespace: str, pod: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        """The base container's environment as the kubelet resolves it (Secrets from ``self.secrets``)."""
        container = pod["spec"]["containers"][0]
        env: dict[str, str] = {}
        meta = pod["metadata"]
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef") or {}
            data = self.secrets.get((namespace, ref.get("name")))
            if data is None:
                return env, f'secret "{ref.get("name")}" not found'
            env.update(data)
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            value_from = item.get("valueFrom") or {}
            if ref := value_from.get("secretKeyRef"):
                data = self.secrets.get((namespace, ref["name"]))
                if data is None:
                    return env, f'secret "{ref["name"]}" not found'
                if ref["key"] not in data:
                    return env, f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}"
                env[item["name"]] = data[ref["key"]]
            elif ref := value_from.get("fieldRef"):
                field_path = ref["fieldPath"]
                if m := re.match(r"metadata\.annotations\['(.+)'\]$", field_path):
                    env[item["name"]] = (meta.get("annotations") or {}).get(m.group(1), "")
                elif field_path == "metadata.name":
                    env[item["name"]] = meta["name"]
        return env, None

    def _add_pod(self, namespace: str, obj: dict[str, Any], script: PodScript | None = None) -> _Pod:
        obj["metadata"].update({"namespace": namespace, "uid": _uid(), "resourceVersion": self._next_rv(),
                                "creationTimestamp": now()})  # fmt: skip
        if script is None:
            script = (
                self.scripts.pop(0) if len(self.scripts) > 1 else (self.scripts or [self.default_script])[0]
            )
        env, env_error = self._resolve_env(namespace, obj)
        pod = _Pod(obj, script, env, env_error)
        self.pods[(namespace, obj["metadata"]["name"])] = pod
        if script.on_create:
            script.on_create(copy.deepcopy(obj))
        return pod

    def _pods(
        self, method: str, namespace: str, name: str | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        if name is None:
            if method == "POST":
                if (namespace, body["metadata"]["name"]) in self.pods:
                    return 409, self.status(
                        409, "AlreadyExists", f'pods "{body["metadata"]["name"]}" already exists'
                    )
                if invalid := self._invalid(body):
                    return 422, invalid
                self.created.append(copy.deepcopy(body))
                obj = copy.deepcopy(body)
                if QUEUE_LABEL in (obj["metadata"].get("labels") or {}):  # Kueue's pod webhook gates it
                    obj["spec"]["schedulingGates"] = [
                        *obj["spec"].get("schedulingGates", []),
                        {"name": KUEUE_GATE},
                    ]
                    self._queued_since[("Pod", namespace, obj["metadata"]["name"])] = self._requests_served
                return 201, self._add_pod(namespace, obj).snapshot()
            selector = (query.get("labelSelector") or [""])[0]
            items = [
                pod.snapshot() for (ns, _), pod in self.pods.items()
                if ns == namespace and matches(pod.obj["metadata"].get("labels") or {}, selector)
            ]  # fmt: skip
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": self._next_rv()},
                         "items": items}  # fmt: skip
        pod = self.pods.get((namespace, name))
        if pod is None:
            return 404, self.status(404, "NotFound", f'pods "{name}" not found')
        if method == "GET":
            return 200, pod.snapshot()
        if method == "PATCH":
            pod.obj = apply_merge_patch(pod.obj, body)
            pod.obj["metadata"]["resourceVersion"] = self._next_rv()
            return 200, pod.snapshot()
        if method == "DELETE":
            snapshot = pod.snapshot()
            del self.pods[(namespace, name)]
            pod.kill()
            self.deleted.append(("Pod", namespace, name))
            return 200, snapshot
        return 405, self.status(405, "MethodNotAllowed", method)

    def _log(self, namespace: str, name: str, query: dict[str, list[str]]) -> tuple[int, Any, str]:
        follow = (query.get("follow") or ["false"])[0].lower() == "true"
        timestamps = (query.get("timestamps") or ["false"])[0].lower() == "true"
        pod = self.pods.get((namespace, name))
        if pod is None:
            return 404, self.status(404, "NotFound", f'pods "{name}" not found'), "application/json"
        if not pod.base_started():
            message = f'container "{pod.base["name"]}" in pod "{name}" is waiting to start: ContainerCreating'
            return 400, self.status(400, "BadRequest", message), "application/json"
        deadline = time.monotonic() + 600
        while (
            follow
            and not pod.base_done()
            and time.monotonic() < deadline
            and self.pods.get((namespace, name))
        ):
            self.lock.release()  # let the trainer's status move on while this request waits
            try:
                time.sleep(0.05)
            finally:
                self.lock.acquire()
        lines = pod.log_lines()
        text = "".join(f"{ts} {line}\n" if timestamps else f"{line}\n" for ts, line in lines)
        return 200, text.encode(), "text/plain"

    def _events(self, namespace: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if (query.get("watch") or ["false"])[0].lower() == "true":
            return 403, self.status(
                403, "Forbidden", "events is forbidden: watch is not allowed for the stub user"
            )
        selector = (query.get("fieldSelector") or [""])[0]
        name = selector.split("involvedObject.name=", 1)[-1] if "involvedObject.name=" in selector else None
        items = []
        pod = self.pods.get((namespace, name)) if name else None
        if pod is not None and pod.script.unschedulable:
            items.append({
                "metadata": {"name": f"{name}.1", "namespace": namespace, "uid": f"ev-{name}",
                             "resourceVersion": self._next_rv()},
                "involvedObject": {"kind": "Pod", "name": name, "namespace": namespace},
                "reason": "FailedScheduling", "message": pod.script.unschedulable, "type": "Warning",
            })  # fmt: skip
        return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": self._next_rv()},
                     "items": items}  # fmt: skip

    # -- Jobs: the Job controller, just enough for an Indexed Job ------------------------------------------------

    def _job_status(self, job: dict[str, Any]) -> dict[str, Any]:
        name = job["metadata"]["name"]
        namespace = job["metadata"]["namespace"]
        pods = [p for (ns, _), p in self.pods.items()
                if ns == namespace and (p.obj["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == name]  # fmt: skip
        if job["spec"].get("suspend"):
            return {"active": 0, "conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                                 "message": "Job suspended", "lastTransitionTime": now()}]}  # fmt: skip
        phases = [p.status()["phase"] for p in pods]
        succeeded = phases.count("Succeeded")
        failed = phases.count("Failed")
        status: dict[str, Any] = {"active": phases.count("Running") + phases.count("Pending"),
                                  "succeeded": succeeded, "failed": failed,
                                  "startTime": job.get("_started") or job["metadata"]["creationTimestamp"]}  # fmt: skip
        if failed:
            status["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                     "message": "Job has reached the specified backoff limit",
                                     "lastTransitionTime": now()}]  # fmt: skip
        elif succeeded == job["spec"].get("completions", 1):
            status["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": now()}]
        return status

    def _jobs(
        self,
        method: str,
        namespace: str,
        name: str | None,
        sub: str | None,
        query: dict[str, list[str]],
        body: Any,
    ) -> tuple[int, Any]:
        if name is None:
            if method == "POST":
                job_name = body["metadata"]["name"]
                if (namespace, job_name) in self.jobs:
                    return 409, self.status(409, "AlreadyExists", f'jobs.batch "{job_name}" already exists')
                if invalid := self._invalid(body):
                    return 422, invalid
                self.created.append(copy.deepcopy(body))
                job = copy.deepcopy(body)
                job["metadata"].update({"namespace": namespace, "uid": _uid(), "resourceVersion": self._next_rv(),
                                        "creationTimestamp": now()})  # fmt: skip
                self.jobs[(namespace, job_name)] = job
                if job["spec"].get("suspend"):
                    self._queued_since[("Job", namespace, job_name)] = self._requests_served
                else:
                    self._start_job_pods(namespace, job)
                return 201, {**job, "status": self._job_status(job)}
            selector = (query.get("labelSelector") or [""])[0]
            items = [{**self._public(job), "status": self._job_status(job)} for (ns, _), job in self.jobs.items()
                     if ns == namespace and matches(job["metadata"].get("labels") or {}, selector)]  # fmt: skip
            return 200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items}
        job = self.jobs.get((namespace, name))
        if job is None:
            return 404, self.status(404, "NotFound", f'jobs.batch "{name}" not found')
        if method == "GET":
            return 200, {**self._public(job), "status": self._job_status(job)}
        if method == "DELETE":
            del self.jobs[(namespace, name)]
            self.deleted.append(("Job", namespace, name))
            for key, pod in list(self.pods.items()):
                if (
                    key[0] == namespace
                    and (pod.obj["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == name
                ):
                    del self.pods[key]
                    pod.kill()
                    self.deleted.append(("Pod", namespace, key[1]))
            uid = job["metadata"]["uid"]
            for key, service in list(self.services.items()):  # the garbage collector: owned Services go too
                if any(ref.get("uid") == uid for ref in service["metadata"].get("ownerReferences") or []):
                    del self.services[key]
                    self.deleted.append(("Service", namespace, key[1]))
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}
        return 405, self.status(405, "MethodNotAllowed", method)

    def _start_job_pods(self, namespace: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        for index in range(job["spec"].get("completions", 1)):
            meta = copy.deepcopy(template.get("metadata") or {})
            meta.pop("namespace", None)
            meta["name"] = f"{name}-{index}-{_secrets.token_hex(3)}"
            meta["labels"] = {**(meta.get("labels") or {}), "batch.kubernetes.io/job-name": name, "job-name": name,
                              "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
                              "batch.kubernetes.io/job-completion-index": str(index)}  # fmt: skip
            meta["annotations"] = {**(meta.get("annotations") or {}),
                                   "batch.kubernetes.io/job-completion-index": str(index)}  # fmt: skip
            meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                        "uid": job["metadata"]["uid"], "controller": True}]  # fmt: skip
            spec = copy.deepcopy(template["spec"])
            spec["hostname"] = f"{name}-{index}"
            self._add_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})

    def _services(self, method: str, namespace: str, name: str | None, body: Any) -> tuple[int, Any]:
        if name is None and method == "POST":
            service_name = body["metadata"]["name"]
            if (namespace, service_name) in self.services:
                return 409, self.status(409, "AlreadyExists", f'services "{service_name}" already exists')
            if invalid := self._invalid(body):
                return 422, invalid
            self.created.append(copy.deepcopy(body))
            service = copy.deepcopy(body)
            service["metadata"].update({"namespace": namespace, "uid": _uid(), "creationTimestamp": now()})
            self.services[(namespace, service_name)] = service
            return 201, service
        service = self.services.get((namespace, name))
        if service is None:
            return 404, self.status(404, "NotFound", f'services "{name}" not found')
        if method == "GET":
            return 200, service
        if method == "DELETE":
            del self.services[(namespace, name)]
            self.deleted.append(("Service", namespace, name))
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}
        return 405, self.status(405, "MethodNotAllowed", method)

    # -- Kueue: admission of queued workloads ------------------------------------------------------------------

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in obj.items() if not key.startswith("_")}

    def _kueue(self) -> None:
        """Play Kueue: admit each queued workload whose queue has quota for it now (see :attr:`queues`)."""
        self._requests_served += 1
        clock = self._requests_served
        queued: list[tuple[str, tuple[str, str], dict[str, Any]]] = []
        queued += [("Pod", key, pod.obj) for key, pod in self.pods.items() if pod.gated]
        queued += [("Job", key, job) for key, job in self.jobs.items() if job["spec"].get("suspend")]
        queued += [("TrainJob", key, tj) for key, tj in self.trainjobs.items() if tj["spec"].get("suspend")]
        for kind, key, obj in queued:
            queue = (obj["metadata"].get("labels") or {}).get(QUEUE_LABEL)
            if queue is None:
                continue
            since = self._queued_since.setdefault((kind, *key), clock)
            delay = self.queues.get(queue)
            if delay is None or clock - since <= delay:
                continue
            self.admitted.append((kind, key[1], queue))
            if kind == "Pod":
                self.pods[key].ungate()
            elif kind == "Job":
                obj["spec"]["suspend"] = False
                obj["_started"] = now()
                self._start_job_pods(key[0], obj)
            else:
                obj["spec"]["suspend"] = False
                self._start_trainjob(key[0], obj)

    # -- Kubeflow Trainer: TrainJobs, their JobSets and pods ------------------------------------------------------

    def _invalid_trainjob(self, body: dict[str, Any]) -> dict[str, Any] | None:
        errors = check_metadata(body.get("metadata") or {}, "Job")  # a TrainJob name becomes a JobSet's
        if self._trainjob_validators is not None:
            spec_validator, _ = self._trainjob_validators
            errors += [
                f"spec.{'.'.join(map(str, e.path))}: {e.message}"
                for e in sorted(
                    spec_validator.iter_errors(body.get("spec") or {}), key=lambda e: list(e.path)
                )
            ]
        ref = (body.get("spec") or {}).get("runtimeRef") or {}
        runtime = TRAINING_RUNTIMES.get(ref.get("name", ""))
        if not errors and (runtime is None or runtime[0] != ref.get("kind", "ClusterTrainingRuntime")):
            errors.append(f"{ref.get('kind')} {ref.get('name')!r} not found")  # the Trainer's webhook
        if not errors:
            return None
        self.rejected.extend(errors)
        return self.status(422, "Invalid", "TrainJob is invalid: " + "; ".join(errors[:5]))

    def _trainjob_pods(self, namespace: str, name: str) -> list[_Pod]:
        return [p for (ns, _), p in self.pods.items()
                if ns == namespace and (p.obj["metadata"].get("labels") or {}).get(JOBSET_LABEL) == name]  # fmt: skip

    def _condition(self, kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now(),
        }

    def _trainjob_status(self, tj: dict[str, Any]) -> dict[str, Any]:
        """The status the Trainer controller writes, from its JobSet's pods."""
        namespace, name = tj["metadata"]["namespace"], tj["metadata"]["name"]
        if tj["spec"].get("suspend"):
            return {"conditions": [self._condition("Suspended", "True", "Suspended", "TrainJob is suspended")],
                    "jobsStatus": [{"name": "node", "active": 0, "ready": 0, "succeeded": 0, "failed": 0,
                                    "suspended": 1}]}  # fmt: skip
        conditions = [self._condition("Created", "True", "JobsCreationSucceeded", "succeeded to create Jobs")]
        if (namespace, name) in self._queued_since_keys():
            conditions.append(self._condition("Suspended", "False", "Resumed", "TrainJob is resumed"))
        phases = [p.status()["phase"] for p in self._trainjob_pods(namespace, name)]
        failed, succeeded = phases.count("Failed"), phases.count("Succeeded")
        done = succeeded == tj["spec"]["trainer"].get("numNodes", 1)
        jobs = {"name": "node", "active": 0 if failed or done else 1, "ready": int(phases.count("Running") > 0),
                "succeeded": int(done and not failed), "failed": int(failed > 0), "suspended": 0}  # fmt: skip
        if failed:
            conditions.append(self._condition("Failed", "True", "FailedJobs",
                                              "jobset failed due to one or more job failures"))  # fmt: skip
        elif done:
            conditions.append(
                self._condition("Complete", "True", "AllJobsCompleted", "jobset completed successfully")
            )
        status = {"conditions": conditions, "jobsStatus": [jobs]}
        if self._trainjob_validators is not None:
            _, status_validator = self._trainjob_validators
            assert not list(status_validator.iter_errors(status)), list(status_validator.iter_errors(status))
        return status

    def _queued_since_keys(self) -> set[tuple[str, str]]:
        return {(ns, name) for kind, ns, name in self._queued_since if kind == "TrainJob"}

    def _start_trainjob(self, namespace: str, tj: dict[str, Any]) -> None:
        """The Trainer controller and JobSet: a JobSet of one Indexed Job ``node`` of ``numNodes`` pods."""
        name = tj["metadata"]["name"]
        spec = tj["spec"]
        trainer = spec["trainer"]
        _, default_image = TRAINING_RUNTIMES[spec["runtimeRef"]["name"]]
        jobset = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
                  "metadata": {"name": name, "namespace": namespace, "uid": _uid(),
                               "ownerReferences": [{"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                                                    "name": name, "uid": tj["metadata"]["uid"], "controller": True}]},
                  "spec": {"replicatedJobs": [{"name": "node", "replicas": 1}]}}  # fmt: skip
        self.jobsets[(namespace, name)] = jobset
        patch: dict[str, Any] = {}
        for item in spec.get("runtimePatches") or []:
            for rjob in item["trainingRuntimeSpec"]["template"]["spec"].get("replicatedJobs") or []:
                if rjob["name"] == "node":
                    patch = rjob["template"]["spec"]["template"]
        patch_spec = copy.deepcopy(patch.get("spec") or {})
        patch_containers = {c["name"]: c for c in patch_spec.pop("containers", [])}
        nodes = trainer.get("numNodes", 1)
        job_name = f"{name}-node-0"
        master = f"{job_name}-0.{name}"
        for index in range(nodes):
            meta = copy.deepcopy(patch.get("metadata") or {})
            meta["name"] = f"{job_name}-{index}-{_secrets.token_hex(3)}"
            meta["labels"] = {**(meta.get("labels") or {}), JOBSET_LABEL: name,
                              "jobset.sigs.k8s.io/replicatedjob-name": "node", "jobset.sigs.k8s.io/job-index": "0",
                              "batch.kubernetes.io/job-name": job_name,
                              "batch.kubernetes.io/job-completion-index": str(index),
                              "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}  # fmt: skip
            meta["annotations"] = {**(meta.get("annotations") or {}),
                                   "batch.kubernetes.io/job-completion-index": str(index)}  # fmt: skip
            meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": _uid(),
                                        "controller": True}]  # fmt: skip
            rank = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            container: dict[str, Any] = {
                "name": "node",
                "image": trainer.get("image") or default_image,
                "command": list(trainer.get("command") or []),
                "env": [
                    *(trainer.get("env") or []),
                    {"name": "PET_NNODES", "value": str(nodes)},
                    {"name": "PET_NPROC_PER_NODE", "value": str(trainer.get("numProcPerNode", 1))},
                    {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": rank}}},
                    {"name": "PET_MASTER_ADDR", "value": master},
                    {"name": "PET_MASTER_PORT", "value": str(_TORCH_PORT)},
                ],
                "ports": [{"containerPort": _TORCH_PORT}],
            }
            if trainer.get("resourcesPerNode"):
                container["resources"] = trainer["resourcesPerNode"]
            if mounts := (patch_containers.get("node") or {}).get("volumeMounts"):
                container["volumeMounts"] = mounts
            pod_spec = {**copy.deepcopy(patch_spec), "containers": [container], "restartPolicy": "Never",
                        "hostname": f"{job_name}-{index}", "subdomain": name}  # fmt: skip
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
            if self.validate and (errors := validate_object(pod)):
                self.rejected.extend(f"TrainJob {name}'s pod: {e}" for e in errors)
            self._add_pod(namespace, pod)

    def _trainjobs(
        self, method: str, namespace: str, name: str | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        if name is None:
            if method == "POST":
                tj_name = body["metadata"]["name"]
                if (namespace, tj_name) in self.trainjobs:
                    return 409, self.status(
                        409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{tj_name}" already exists'
                    )
                if invalid := self._invalid_trainjob(body):
                    return 422, invalid
                self.created.append(copy.deepcopy(body))
                tj = copy.deepcopy(body)
                tj["metadata"].update({"namespace": namespace, "uid": _uid(), "resourceVersion": self._next_rv(),
                                       "generation": 1, "creationTimestamp": now()})  # fmt: skip
                self.trainjobs[(namespace, tj_name)] = tj
                if tj["spec"].get("suspend"):
                    self._queued_since.setdefault(("TrainJob", namespace, tj_name), self._requests_served)
                else:
                    self._start_trainjob(namespace, tj)
                return 201, {**tj, "status": self._trainjob_status(tj)}
            selector = (query.get("labelSelector") or [""])[0]
            items = [{**tj, "status": self._trainjob_status(tj)} for (ns, _), tj in self.trainjobs.items()
                     if ns == namespace and matches(tj["metadata"].get("labels") or {}, selector)]  # fmt: skip
            return 200, {"kind": "TrainJobList", "apiVersion": "trainer.kubeflow.org/v1alpha1", "metadata": {},
                         "items": items}  # fmt: skip
        tj = self.trainjobs.get((namespace, name))
        if tj is None:
            return 404, self.status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
        if method == "GET":
            return 200, {**tj, "status": self._trainjob_status(tj)}
        if method == "DELETE":
            del self.trainjobs[(namespace, name)]
            self.jobsets.pop((namespace, name), None)
            self.deleted.append(("TrainJob", namespace, name))
            for pod in self._trainjob_pods(namespace, name):
                key = (namespace, pod.obj["metadata"]["name"])
                del self.pods[key]
                pod.kill()
                self.deleted.append(("Pod", namespace, key[1]))
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}
        return 405, self.status(405, "MethodNotAllowed", method)

    def _jobsets(
        self, method: str, namespace: str, name: str | None, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        if method != "GET":
            return 405, self.status(405, "MethodNotAllowed", method)
        if name is None:
            items = [js for (ns, _), js in self.jobsets.items() if ns == namespace]
            return 200, {
                "kind": "JobSetList",
                "apiVersion": "jobset.x-k8s.io/v1alpha2",
                "metadata": {},
                "items": items,
            }
        jobset = self.jobsets.get((namespace, name))
        if jobset is None:
            return 404, self.status(404, "NotFound", f'jobsets.jobset.x-k8s.io "{name}" not found')
        return 200, jobset

    # -- exec over WebSocket (what KPO's XCom extraction uses) ---------------------------------------------------

    def exec_websocket(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]) -> None:
        m = _POD.match(path)
        key = handler.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        handler.end_headers()
        handler.close_connection = True
        command = " ".join(query.get("command") or [])
        with self.lock:
            pod = self.pods.get((m.group(1), m.group(2))) if m and m.group(3) == "exec" else None
            result = pod.result() if pod is not None else None
        if pod is None:
            _ws_send(handler, 3, json.dumps(self.status(404, "NotFound", "pod not found")).encode())
        elif "return.json" in command:
            out = json.dumps(result) if result is not None else EMPTY_XCOM
            _ws_send(handler, 1, out.encode())
            _ws_send(handler, 3, b'{"metadata":{},"status":"Success"}')
        else:  # the sidecar kill: read the command written to stdin, then the sidecar exits
            _ws_read(handler)
            with self.lock:
                pod.sidecar_killed = True
            _ws_send(handler, 3, b'{"metadata":{},"status":"Success"}')
        handler.wfile.write(b"\x88\x02\x03\xe8")  # close frame, 1000
        handler.wfile.flush()


def _uid() -> str:
    return "-".join(_secrets.token_hex(n) for n in (4, 2, 2, 2, 6))


def _ws_send(handler: BaseHTTPRequestHandler, channel: int, data: bytes) -> None:
    payload = bytes([channel]) + data
    header = bytearray([0x82])  # FIN + binary
    if len(payload) < 126:
        header.append(len(payload))
    elif len(payload) < 65536:
        header += bytes([126]) + len(payload).to_bytes(2, "big")
    else:
        header += bytes([127]) + len(payload).to_bytes(8, "big")
    handler.wfile.write(bytes(header) + payload)
    handler.wfile.flush()


def _ws_read(handler: BaseHTTPRequestHandler) -> bytes:
    """Read one (masked) client frame."""
    head = handler.rfile.read(2)
    if len(head) < 2:
        return b""
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(handler.rfile.read(2), "big")
    elif length == 127:
        length = int.from_bytes(handler.rfile.read(8), "big")
    mask = handler.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = handler.rfile.read(length)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))
