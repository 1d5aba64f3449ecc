"""
A stand-in for the Kubernetes API server (and a tiny kubelet and Job controller), for the training runtime tests.

:class:`KubePodStub` serves, on loopback over real HTTP, the REST paths ``KubernetesPodOperator``,
``KubernetesJobOperator``, their triggers and the kubernetes clients (sync and asyncio) use for training. Its
concerns live in modules of their own:

- :mod:`~tests.support.kubernetes.pods`: pods (logs, exec over a real WebSocket for KPO's XCom sidecar),
  events and services;
- :mod:`~tests.support.kubernetes.workloads`: the controllers: batch/v1 Jobs (Indexed), Kubeflow Trainer
  TrainJobs and their JobSets, and Kueue admission (:attr:`KubePodStub.queues`);
- :mod:`~tests.support.kubernetes.kubelet`: what happens to each pod, scripted by a :class:`PodScript` or real
  (``run_command=True``: the container's command runs as a local process with the pod's environment, Secret
  references resolved from :attr:`KubePodStub.secrets`);
- :mod:`~tests.support.kubernetes.schemas`: every created Pod, Job and Service is validated against the official
  Kubernetes JSON schemas of 1.30 and the newest version ``kubernetes-validate`` ships (strict: unknown fields are
  errors), plus object names and label keys/values as the API server checks them; an invalid object gets HTTP
  422, as from a real API server.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.support.kubernetes.kubelet import Pod, PodScript
from tests.support.kubernetes.pods import EVENTS_PATH, POD_PATH, SERVICE_PATH, PodApi
from tests.support.kubernetes.schemas import trainjob_validators
from tests.support.kubernetes.workloads import (
    JOB_PATH,
    JOBSET_PATH,
    TRAINJOB_PATH,
    JobController,
    Kueue,
    TrainerController,
)

if TYPE_CHECKING:
    from tests.support.kubernetes.server import Request


class KubePodStub(Kueue, JobController, TrainerController, PodApi):
    """See the module docstring. Use as a context manager, or call :meth:`close`."""

    def __init__(self, validate: bool = True) -> None:
        self.lock = threading.RLock()
        self.validate = validate
        self.pods: dict[tuple[str, str], Pod] = {}
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
        self.start()

    def handle(self, request: Request) -> None:
        raw = request.read_body()
        parts = urlsplit(request.path)
        query = {k: v for k, v in parse_qs(parts.query).items()}
        self.requests.append((request.command, parts.path))
        if not request.authorized():
            request.send(401, self.status(401, "Unauthorized", "no or wrong bearer token"))
            return
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.exec_websocket(request, parts.path, query)
            return
        body = json.loads(raw) if raw else None
        code, payload, content_type = self.route(request.command, parts.path, query, body)
        request.send(code, payload, content_type)

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

    # -- routing -----------------------------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any, str]:
        json_type = "application/json"
        with self.lock:
            self._kueue()
            if m := TRAINJOB_PATH.match(path):
                code, payload = self._trainjobs(method, *m.groups(), query, body)
            elif m := JOBSET_PATH.match(path):
                code, payload = self._jobsets(method, *m.groups(), query)
            elif m := POD_PATH.match(path):
                namespace, name, sub = m.groups()
                if sub == "log":
                    return self._log(namespace, name, query)
                code, payload = self._pods(method, namespace, name, query, body)
            elif m := EVENTS_PATH.match(path):
                code, payload = self._events(m.group(1), query)
            elif m := JOB_PATH.match(path):
                code, payload = self._jobs(method, *m.groups(), query, body)
            elif m := SERVICE_PATH.match(path):
                code, payload = self._services(method, *m.groups(), body)
            else:
                code, payload = (
                    404,
                    self.status(404, "NotFound", f"{method} {path} is not served by the stub"),
                )
        return code, payload, json_type
