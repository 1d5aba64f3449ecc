"""
A stand-in for the Kubernetes API server serving KServe InferenceServices, for the KServe deploy target tests.

A threaded ``http.server`` on loopback that implements the custom-objects REST paths of KServe
``InferenceService`` resources (GET / POST / PATCH with ``application/merge-patch+json`` / DELETE under
``/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices``), checks the bearer token, validates
every stored spec against the InferenceService CRD schema (422 on a violation, as the API server does), and
plays KServe's controller: after ``reads_until_ready`` reads of a new generation it writes the status a
KServe controller would write for the behaviour configured for that model version (``ok``, ``fail-load``,
``pending``). It also plays the predictor: ``POST /serving/{ns}/{name}/invocations`` answers
``{"predictions": [<served version>] * rows}`` (or, with ``answer`` set, ``answer(version, row)`` for each row;
HTTP 500 for behaviour ``bad-predict``; HTTP 503 for every second request to a version of a resource with
behaviour ``flaky-predict``; HTTP 500 for every 20th request to a version with behaviour ``fails-5-percent``, so its
first request, a smoke test, passes).

KServe's request/response logger: a revision whose spec has ``predictor.logger`` posts each request and its answer
to the logger's URL as binary-mode CloudEvents (``ce-id`` shared by the two, ``ce-type`` ending in ``.request`` /
``.response``), with the headers named in ``metadataHeaders`` forwarded as ``ce-metadata``, as KServe's agent
does. Each version keeps the logger URL of the revision that serves it (the URL names the version).

Canaries: a Ready rollout whose spec has ``canaryTrafficPercent: N`` while another version is rolled out
splits the traffic as KServe does: the shared URL sends N of every 100 requests to the new (``latest``)
revision and the rest to the previous one, and the status lists both in ``components.predictor.traffic``
with tag URLs (``.../latest``, ``.../prev``, as tag routing gives) that reach one revision only. A rollout
without ``canaryTrafficPercent`` sends everything to its version.

Driven through the real ``kubernetes`` client (a kubeconfig pointing at it), so requests, content types and
errors are real HTTP.

The InferenceService CRD schema and the merge patch come from :mod:`tests.support.kubernetes.schemas`, the HTTP
server from :mod:`tests.support.kubernetes.server`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from typing import TYPE_CHECKING, Any

import requests

from tests.support.kubernetes.schemas import apply_merge_patch, spec_validator
from tests.support.kubernetes.server import Request, StubServer, now

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

_COLLECTION = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices/?$")
_ITEM = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices/([^/?]+)$")
_PREDICT = re.compile(r"^/serving/([^/]+)/([^/]+)(?:/(latest|prev))?/invocations$")
_VERSION_ANNOTATION = "airflow-mlops/model-version"


class KubeApiStub(StubServer):
    """See the module docstring. Use as a context manager, or call :meth:`close`."""

    def __init__(self, validate: bool = True, reads_until_ready: int = 1) -> None:
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.behaviour: dict[str, str] = {}
        self.reads_until_ready = reads_until_ready
        self.predictions: list[dict[str, Any]] = []
        self._reads: dict[tuple[str, str], int] = {}
        #: Per resource: (latest version, previous version or None, percent of traffic to latest).
        self.routes: dict[tuple[str, str], tuple[str, str | None, int]] = {}
        self._rolled_out: dict[tuple[str, str], str] = {}
        self._shared_requests = 0
        self._version_requests: dict[tuple[str, str, str], int] = {}
        self._validator = spec_validator() if validate else None
        #: When set, the predictor answers ``answer(version, row)`` for each row instead of the version.
        self.answer: Callable[[str, dict[str, Any]], Any] | None = None
        #: Per (namespace, name, version): the ``predictor.logger`` of the revision serving that version.
        self.loggers: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.logged = 0
        self._resource_version = 0
        self.start()

    def handle(self, request: Request) -> None:
        raw = request.read_body()
        body = json.loads(raw) if raw else None
        path = request.path.split("?", 1)[0]
        self.requests.append(
            {"method": request.command, "path": path, "content_type": request.headers.get("Content-Type")}
        )
        predict = _PREDICT.match(path)
        if predict and request.command == "POST":
            namespace, name, tag = predict.group(1), predict.group(2), predict.group(3)
            code, payload, version = self.predict(namespace, name, body, tag)
            request.send(code, payload)
            if version is not None:
                self._log(namespace, name, version, raw, payload, request.headers)
            return
        if not request.authorized():
            request.send(401, self.status(401, "Unauthorized", "no or wrong bearer token"))
            return
        code, payload = self.route(request.command, path, body, request.headers.get("Content-Type") or "")
        request.send(code, payload)

    # -- API -----------------------------------------------------------------------------------------------

    @staticmethod
    def status(code: int, reason: str, message: str) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }

    def _invalid(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        if self._validator is None:
            return None
        errors = sorted(self._validator.iter_errors(obj.get("spec") or {}), key=lambda e: list(e.path))
        if not errors:
            return None
        message = "; ".join(f"spec.{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
        return self.status(422, "Invalid", f"InferenceService is invalid: {message}")

    def route(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, Any]:
        with self.lock:
            collection, item = _COLLECTION.match(path), _ITEM.match(path)
            if collection and method == "POST":
                return self._create(collection.group(1), body)
            if item:
                key = (item.group(1), item.group(2))
                if key not in self.objects:
                    return 404, self.status(404, "NotFound", f'inferenceservices "{key[1]}" not found')
                if method == "GET":
                    return 200, self._read(key)
                if method == "PATCH":
                    if "merge-patch" not in content_type:
                        return 415, self.status(
                            415, "UnsupportedMediaType", f"unsupported patch type {content_type}"
                        )
                    return self._patch(key, body)
                if method == "DELETE":
                    del self.objects[key]
                    return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
            return 405, self.status(405, "MethodNotAllowed", f"{method} {path}")

    def _next_rv(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _create(self, namespace: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            return 409, self.status(409, "AlreadyExists", f'inferenceservices "{name}" already exists')
        invalid = self._invalid(body)
        if invalid:
            return 422, invalid
        obj = copy.deepcopy(body)
        obj["metadata"].update(
            {"namespace": namespace, "generation": 1, "resourceVersion": self._next_rv(), "uid": f"uid-{name}",
             "creationTimestamp": now()}
        )  # fmt: skip
        obj["status"] = {}
        self.objects[(namespace, name)] = obj
        self._reads[(namespace, name)] = 0
        return 201, copy.deepcopy(obj)

    def _patch(self, key: tuple[str, str], patch: dict[str, Any]) -> tuple[int, Any]:
        old = self.objects[key]
        new = apply_merge_patch(old, patch)
        invalid = self._invalid(new)
        if invalid:
            return 422, invalid
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            self._reads[key] = 0
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[key] = new
        return 200, copy.deepcopy(new)

    def _read(self, key: tuple[str, str]) -> dict[str, Any]:
        obj = self.objects[key]
        generation = obj["metadata"]["generation"]
        if (obj.get("status") or {}).get("observedGeneration") != generation:
            self._reads[key] += 1
            if self._reads[key] >= self.reads_until_ready:
                self._reconcile(key, obj)
        return copy.deepcopy(obj)

    def _reconcile(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        """Write the status KServe's controller would write for the configured behaviour."""
        namespace, name = key
        generation = obj["metadata"]["generation"]
        version = obj["metadata"].get("annotations", {}).get(_VERSION_ANNOTATION, "")
        behaviour = self.behaviour.get(version, "ok")
        revision = f"{name}-predictor-{generation:05d}"
        previous = obj.get("status") or {}
        if behaviour == "pending":
            obj["status"] = {
                **previous,
                "observedGeneration": generation,
                "conditions": [{"type": "Ready", "status": "Unknown", "reason": "RevisionMissing",
                                "message": "Configuration is waiting for a Revision to become ready."}],
                "modelStatus": {"transitionStatus": "InProgress",
                                "states": {"activeModelState": "Loaded", "targetModelState": "Loading"}},
            }  # fmt: skip
            return
        if behaviour == "fail-load":
            obj["status"] = {
                **previous,
                "observedGeneration": generation,
                "conditions": [
                    {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
                     "message": f'Revision "{revision}" failed with message: model failed to load'},
                    {"type": "Ready", "status": "False", "reason": "RevisionFailed"},
                ],
                "modelStatus": {
                    "transitionStatus": "BlockedByFailedLoad",
                    "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "No module named 'missing_dep'"},
                },
            }  # fmt: skip
            return
        base = f"{self.url}/serving/{namespace}/{name}"
        logger = (obj.get("spec") or {}).get("predictor", {}).get("logger")
        if logger:
            self.loggers[(namespace, name, version)] = copy.deepcopy(logger)
        else:
            self.loggers.pop((namespace, name, version), None)
        percent = (obj.get("spec") or {}).get("predictor", {}).get("canaryTrafficPercent")
        previous_version = self._rolled_out.get(key)
        predictor_status: dict[str, Any] = {
            "latestCreatedRevision": revision,
            "latestReadyRevision": revision,
        }
        if percent is not None and percent < 100 and previous_version not in (None, version):
            self.routes[key] = (version, previous_version, int(percent))
            previous_revision = (
                (previous.get("components") or {}).get("predictor", {}).get("latestRolledoutRevision")
            )
            predictor_status.update(
                {
                    "latestRolledoutRevision": previous_revision,
                    "traffic": [
                        {"tag": "prev", "revisionName": previous_revision, "percent": 100 - int(percent),
                         "latestRevision": False, "url": f"{base}/prev"},
                        {"tag": "latest", "revisionName": revision, "percent": int(percent),
                         "latestRevision": True, "url": f"{base}/latest"},
                    ],
                }
            )  # fmt: skip
        else:
            self.routes[key] = (version, None, 100)
            self._rolled_out[key] = version
            predictor_status["latestRolledoutRevision"] = revision
        obj["status"] = {
            "observedGeneration": generation,
            "url": base,
            "conditions": [
                {"type": "PredictorReady", "status": "True", "lastTransitionTime": now()},
                {"type": "Ready", "status": "True", "lastTransitionTime": now()},
            ],
            "modelStatus": {
                "transitionStatus": "UpToDate",
                "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            },
            "components": {"predictor": predictor_status},
        }

    def predict(
        self, namespace: str, name: str, body: Any, tag: str | None = None
    ) -> tuple[int, Any, str | None]:
        """The predictor's status and answer, and the version that answered (None: no revision did)."""
        with self.lock:
            obj = self.objects.get((namespace, name))
            if obj is None:
                return 404, {"error": f"no InferenceService {namespace}/{name}"}, None
            version = obj["metadata"].get("annotations", {}).get(_VERSION_ANNOTATION, "")
            latest, prev, percent = self.routes.get((namespace, name), (version, None, 100))
            if tag == "prev" and prev is None:
                return 404, {"error": f"no previous revision of {namespace}/{name}"}, None
            if tag == "latest":
                version = latest
            elif tag == "prev" or prev is not None:
                # The shared URL: N of every 100 requests go to the canary, in an even spread.
                self._shared_requests += 1
                n = self._shared_requests
                to_canary = tag is None and (n * percent) // 100 != ((n - 1) * percent) // 100
                version = latest if to_canary else prev
            records = (body or {}).get("dataframe_records") or []
            self.predictions.append({"name": name, "version": version, "rows": len(records), "tag": tag})
            counter = (namespace, name, version)
            self._version_requests[counter] = self._version_requests.get(counter, 0) + 1
            if self.behaviour.get(version) == "flaky-predict" and self._version_requests[counter] % 2 == 0:
                return (
                    503,
                    {
                        "error_code": "UNAVAILABLE",
                        "message": "upstream connect error (every 2nd request)",
                    },
                    version,
                )
            if self.behaviour.get(version) == "bad-predict" or (
                self.behaviour.get(version) == "fails-5-percent" and self._version_requests[counter] % 20 == 0
            ):
                return (
                    500,
                    {"error_code": "INTERNAL_ERROR", "message": "predict() raised: division by zero"},
                    version,
                )
            if self.answer is not None:
                return 200, {"predictions": [self.answer(version, record) for record in records]}, version
            return 200, {"predictions": [int(version)] * len(records)}, version

    def _log(
        self, namespace: str, name: str, version: str, request: bytes, answer: Any, headers: Mapping[str, str]
    ) -> None:
        """Post a request and its answer to the logger of the revision that answered, as KServe's agent does."""
        with self.lock:
            logger = self.loggers.get((namespace, name, version))
        if not logger or logger.get("mode", "all") != "all":
            return
        event_id = str(uuid.uuid4())
        forwarded = {h: [headers[h]] for h in logger.get("metadataHeaders") or [] if headers.get(h)}
        for kind, data in (("request", request), ("response", json.dumps(answer).encode())):
            ce = {
                "ce-id": event_id,
                "ce-specversion": "1.0",
                "ce-type": f"org.kubeflow.serving.inference.{kind}",
                "ce-source": "http://localhost:9081/",
                "ce-inferenceservicename": name,
                "ce-namespace": namespace,
                "ce-component": "predictor",
                "Content-Type": "application/json",
            }
            if forwarded:
                ce["ce-metadata"] = json.dumps(forwarded)
            requests.post(logger["url"], data=data, headers=ce, timeout=10).raise_for_status()
        with self.lock:
            self.logged += 1
