"""
The core API of the pod stand-in: pods (with their logs and exec over WebSocket), events and services.

:class:`PodApi` declares the stand-in cluster's state (filled in by
:class:`~tests.support.kubernetes.cluster.KubePodStub`) and serves:

- pods: create, read, list by label selector, merge-patch (labels), delete; ``/log`` (``follow`` answers once
  the container ended; ``timestamps`` prefixes RFC 3339 times); ``/exec`` over a real WebSocket
  (``v4.channel.k8s.io`` framing), which is how KPO's XCom sidecar hands back ``/airflow/xcom/return.json``
  and is then stopped; a pod labelled ``kueue.x-k8s.io/queue-name`` is gated by Kueue's "webhook";
- events: list (a watch is refused with 403, so clients fall back to polling, as with a restrictive RBAC);
- services: create, read, delete.

Every created object is validated (:func:`~tests.support.kubernetes.schemas.validate_object`; 422 when invalid).
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import TYPE_CHECKING, Any

from tests.support.kubernetes.kubelet import EMPTY_XCOM, Pod, PodScript
from tests.support.kubernetes.schemas import apply_merge_patch, validate_object
from tests.support.kubernetes.server import (
    Request,
    StubServer,
    accept_websocket,
    matches,
    new_uid,
    now,
    ws_close,
    ws_read,
    ws_send,
)

if TYPE_CHECKING:
    import threading

POD_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(?:/(log|exec|status))?$")
EVENTS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")
SERVICE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GATE = "kueue.x-k8s.io/admission"


class PodApi(StubServer):
    """Pods, their logs and exec, events and services (see the module docstring)."""

    lock: threading.RLock
    validate: bool
    pods: dict[tuple[str, str], Pod]
    services: dict[tuple[str, str], dict[str, Any]]
    secrets: dict[tuple[str, str], dict[str, str]]
    scripts: list[PodScript]
    default_script: PodScript
    created: list[dict[str, Any]]
    deleted: list[tuple[str, str, str]]
    rejected: list[str]
    _queued_since: dict[tuple[str, str, str], int]
    _requests_served: int
    _rv: int

    @staticmethod
    def status(code: int, reason: str, message: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, "code": code}  # fmt: skip

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

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

    def _add_pod(self, namespace: str, obj: dict[str, Any], script: PodScript | None = None) -> Pod:
        obj["metadata"].update({"namespace": namespace, "uid": new_uid(), "resourceVersion": self._next_rv(),
                                "creationTimestamp": now()})  # fmt: skip
        if script is None:
            script = (
                self.scripts.pop(0) if len(self.scripts) > 1 else (self.scripts or [self.default_script])[0]
            )
        env, env_error = self._resolve_env(namespace, obj)
        pod = Pod(obj, script, env, env_error)
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

    def _services(self, method: str, namespace: str, name: str | None, body: Any) -> tuple[int, Any]:
        if name is None and method == "POST":
            service_name = body["metadata"]["name"]
            if (namespace, service_name) in self.services:
                return 409, self.status(409, "AlreadyExists", f'services "{service_name}" already exists')
            if invalid := self._invalid(body):
                return 422, invalid
            self.created.append(copy.deepcopy(body))
            service = copy.deepcopy(body)
            service["metadata"].update({"namespace": namespace, "uid": new_uid(), "creationTimestamp": now()})
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

    # -- exec over WebSocket (what KPO's XCom extraction uses) ---------------------------------------------------

    def exec_websocket(self, request: Request, path: str, query: dict[str, list[str]]) -> None:
        m = POD_PATH.match(path)
        accept_websocket(request, "v4.channel.k8s.io")
        command = " ".join(query.get("command") or [])
        with self.lock:
            pod = self.pods.get((m.group(1), m.group(2))) if m and m.group(3) == "exec" else None
            result = pod.result() if pod is not None else None
        if pod is None:
            ws_send(request, 3, json.dumps(self.status(404, "NotFound", "pod not found")).encode())
        elif "return.json" in command:
            out = json.dumps(result) if result is not None else EMPTY_XCOM
            ws_send(request, 1, out.encode())
            ws_send(request, 3, b'{"metadata":{},"status":"Success"}')
        else:  # the sidecar kill: read the command written to stdin, then the sidecar exits
            ws_read(request)
            with self.lock:
                pod.sidecar_killed = True
            ws_send(request, 3, b'{"metadata":{},"status":"Success"}')
        ws_close(request)
