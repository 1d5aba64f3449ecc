"""
The stand-in's controllers: the Job controller, the Kubeflow Trainer and JobSet controllers, and Kueue.

- :class:`JobController`: batch/v1 Jobs: create (the "controller" creates the Indexed Job's pods at once, with
  their completion index, hostname and subdomain), read, status, list, delete (with its pods and the Services it
  owns);
- :class:`TrainerController`: Kubeflow Trainer ``trainer.kubeflow.org/v1alpha1`` TrainJobs (custom objects:
  create, read, list, delete), each validated against the Trainer CRD schema (strict) and its ``runtimeRef``
  against :data:`TRAINING_RUNTIMES`; the Trainer and JobSet controllers: a ``jobset.x-k8s.io/v1alpha2`` JobSet
  (read, list) of ``numNodes`` pods with the torch runtime's ``PET_*`` variables, and the TrainJob's ``Created``,
  ``Suspended``, ``Complete`` (``AllJobsCompleted``) and ``Failed`` (``FailedJobs``) conditions from its pods;
- :class:`Kueue`: a Job or TrainJob created suspended, or a pod (gated ``kueue.x-k8s.io/admission`` by the
  "webhook"), labelled ``kueue.x-k8s.io/queue-name`` is admitted once its queue has quota (``queues``: that many
  API requests after its creation), else never; admission unsuspends it (or removes the gate) and its pods start
  then.
"""

from __future__ import annotations

import copy
import re
import secrets as _secrets
from typing import TYPE_CHECKING, Any

from tests.support.kubernetes.pods import QUEUE_LABEL, PodApi
from tests.support.kubernetes.schemas import check_metadata, validate_object
from tests.support.kubernetes.server import matches, new_uid, now

if TYPE_CHECKING:
    from tests.support.kubernetes.kubelet import Pod

JOB_PATH = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(?:/(status))?$")
TRAINJOB_PATH = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$"
)
JOBSET_PATH = re.compile(r"^/apis/jobset\.x-k8s\.io/v1alpha2/namespaces/([^/]+)/jobsets(?:/([^/]+))?$")
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
#: The (Cluster)TrainingRuntimes the stand-in's cluster has: name -> (kind, image of the ``node`` container),
#: as in Kubeflow Trainer's manifests/base/runtimes/torch_distributed.yaml.
TRAINING_RUNTIMES = {
    "torch-distributed": ("ClusterTrainingRuntime", "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime")
}
_TORCH_PORT = 29400


class JobController(PodApi):
    """batch/v1 Jobs, and the Job controller: just enough for an Indexed Job."""

    jobs: dict[tuple[str, str], dict[str, Any]]

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in obj.items() if not key.startswith("_")}

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
                job["metadata"].update({"namespace": namespace, "uid": new_uid(), "resourceVersion": self._next_rv(),
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


class TrainerController(PodApi):
    """Kubeflow Trainer TrainJobs, and the Trainer and JobSet controllers: their JobSets and pods."""

    trainjobs: dict[tuple[str, str], dict[str, Any]]
    jobsets: dict[tuple[str, str], dict[str, Any]]
    _trainjob_validators: tuple[Any, Any] | None

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

    def _trainjob_pods(self, namespace: str, name: str) -> list[Pod]:
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
                  "metadata": {"name": name, "namespace": namespace, "uid": new_uid(),
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
            meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": new_uid(),
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
                tj["metadata"].update({"namespace": namespace, "uid": new_uid(), "resourceVersion": self._next_rv(),
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


class Kueue(JobController, TrainerController):
    """Kueue: admission of queued workloads (Jobs, TrainJobs and gated pods)."""

    #: LocalQueue name -> API requests (to any path) after a workload on it was created until Kueue admits it.
    queues: dict[str, int]
    admitted: list[tuple[str, str, str]]

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
