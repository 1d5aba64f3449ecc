"""
:class:`KubernetesRuntime`: run the trainer in Kubernetes: one pod, an Indexed Job of pods, or a TrainJob.

This module imports no heavy library: the kubernetes client and the cncf-kubernetes operators are imported
by :mod:`.pod`, :mod:`.job` and :mod:`.trainjob`, which :class:`KubernetesRuntime` imports inside its methods, when the task
runs, never when a DAG file is parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops.data.storage import is_local
from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.trainer import contract
from airflow_mlops.training.base import RawResult, TrainingCallbacks, TrainingRuntime
from airflow_mlops.training.kubernetes.settings import DISTRIBUTED_VARS, KubernetesSettings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context

    from airflow_mlops.training.spec import TrainingSpec


class KubernetesRuntime(KubernetesSettings, TrainingRuntime):
    """
    Run the trainer in Kubernetes: one pod, or an Indexed Job of ``num_nodes`` pods.

    The pod sees the same training contract as a local trainer (``MLOPS_RESULT_PATH`` is
    ``/airflow/xcom/return.json``). Credentials never appear in the pod spec: MLflow and S3 credentials reach
    the pod only as references to Kubernetes Secrets you name (``secret_env``, ``env_from_secrets``) or
    through the pod's service account (IRSA, workload identity); only non-secret settings of the MLflow and
    AWS connections (tracking/registry URI, region, endpoint URL) are copied as plain values.

    Single node: a pod through ``KubernetesPodOperator``; its result comes back through KPO's XCom sidecar.
    Deferrable, the wait runs in the triggerer and holds no worker slot; a retry after a worker restart
    reattaches to the running pod. A pod lost to preemption, eviction or node shutdown is started again (up
    to ``max_preemptions`` times per try) with the same checkpoint URI. Other failures (OOMKilled, image
    pull, unschedulable, non-zero exit) fail the task with one line saying what happened and what to change,
    as an exception type saying whether a retry can help (:mod:`airflow_mlops.exceptions`).

    Multi-node (``num_nodes > 1``): an Indexed Job of ``num_nodes`` pods plus a headless Service; each pod
    gets the ``torchrun`` rendezvous variables (``PET_NNODES``, ``PET_NODE_RANK``, ``PET_NPROC_PER_NODE``,
    ``PET_MASTER_ADDR``/``PET_MASTER_PORT``, and ``MASTER_ADDR``, ``MASTER_PORT``, ``NNODES``, ``NODE_RANK``,
    ``WORLD_SIZE``). Rank 0's result comes back as its container's termination message. Disrupted pods are
    replaced by the Job controller (``podFailurePolicy``). The Job, its pods and the Service are deleted
    when the task ends, fails or is killed, and expire after ``job_ttl_seconds`` whatever happens.

    Kubeflow Trainer (``training_runtime="torch-distributed"``): a ``TrainJob`` referencing that
    (Cluster)TrainingRuntime, with the same image, command, environment, Secret references, resources, GPUs,
    node count and scheduling; the runtime starts ``torchrun`` on every node and sets the rendezvous. The
    task waits on the TrainJob's ``Complete`` / ``Failed`` conditions; rank 0's result comes back as its
    container's termination message (``MLOPS_RESULT_PATH`` is ``/dev/termination-log``). A retry after a
    worker restart reattaches to the TrainJob still running; a node lost to preemption starts a new TrainJob
    (up to ``max_preemptions`` times per try) with the same checkpoint URI. It is deleted afterwards.

    Kueue (``queue_name``, any mode): the pod, the Job or the TrainJob carries ``kueue.x-k8s.io/queue-name``
    (and ``kueue.x-k8s.io/priority-class``); a Job or TrainJob is created suspended, so Kueue admits all its
    pods at once or none. While it is queued the task is deferred and the log names the queue; that wait does
    not count against ``timeout`` nor the schedule timeout, but against ``admission_timeout``
    (:class:`~airflow_mlops.exceptions.TrainingAdmissionTimeoutError`, retried; the queued object is deleted).

    :param image: Container image holding the trainer and its dependencies. (templated)
    :param resources: CPU, memory and ``/dev/shm`` of each pod (:class:`~.config.Resources`).
    :param gpus: GPUs of each pod: a :class:`~.config.Gpus`, or just their number (``gpus=1``).
    :param scheduling: Node selector, tolerations, affinity, priority class and service account of the pods
        (:class:`~.config.Scheduling`).
    :param connection: The cluster and namespace (:class:`~airflow_mlops.utils.k8s.KubernetesConnection`);
        default the ``kubernetes_default`` connection. Its namespace is the runtime's ``namespace``
        (templated); None: the connection's namespace, else ``default``.
    :param image_pull_policy: ``Always``, ``IfNotPresent`` or ``Never`` (Kubernetes' default when None).
    :param image_pull_secrets: Names of Secrets holding registry credentials.
    :param secret_env: Environment variables read from Kubernetes Secrets: ``{"MLFLOW_TRACKING_TOKEN":
        "mlflow-auth/token", "AWS_ACCESS_KEY_ID": ("s3-creds", "access-key")}`` (``valueFrom.secretKeyRef``).
    :param env_from_secrets: Secrets whose every key becomes an environment variable (``envFrom.secretRef``).
    :param labels: More labels of the pods (and Job/Service). The runtime adds cost-attribution labels
        ``airflow-mlops/dag-id``, ``airflow-mlops/task-id``, ``airflow-mlops/run-id``, ``airflow-mlops/model``
        (values sanitized to valid label values) and ``airflow-mlops/instance``. (templated)
    :param annotations: More annotations of the pods. (templated)
    :param model_label: Value of the ``airflow-mlops/model`` label; default the MLflow experiment name.
    :param volumes: More pod volumes, as Kubernetes dicts.
    :param volume_mounts: Mounts of those volumes into the trainer container, as Kubernetes dicts.
    :param num_nodes: Pods (nodes) of the training; more than one makes an Indexed Job.
    :param processes_per_node: Training processes per pod; default the GPU count (at least 1). With more than
        one process per pod, or more than one node, a module entrypoint is started with ``torchrun``.
    :param master_port: Rendezvous port of multi-node training.
    :param deferrable: Wait in the triggerer (no worker slot held); False waits in the worker. Default
        ``[operators] default_deferrable``.
    :param poll_interval: Seconds between status reads while waiting.
    :param schedule_timeout: Seconds a pod may wait to be scheduled (no node with the asked GPUs, CPU,
        memory, labels or tolerations) before the task fails.
    :param startup_timeout: Seconds a scheduled pod may take to start (image pull included).
    :param max_preemptions: Restarts of a preempted or evicted single-node pod within one try.
    :param termination_grace_period: Seconds between ``SIGTERM`` (the preemption notice) and ``SIGKILL``:
        time for the trainer's final checkpoint.
    :param system_metrics: Set ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true`` (CPU/GPU/memory of the run).
    :param job_ttl_seconds: ``ttlSecondsAfterFinished`` of a multi-node Job: the cluster deletes it (with its
        pods and Service) this long after it finished, even if the worker never cleaned up.
    :param training_runtime: Name of a Kubeflow Trainer (Cluster)TrainingRuntime (``"torch-distributed"``):
        run the training as a ``TrainJob`` on it. Its trainer container must be named ``node``, in a
        replicated Job named ``node``, as in Kubeflow's own runtimes. None: a pod or an Indexed Job.
    :param training_runtime_kind: ``ClusterTrainingRuntime`` (default) or ``TrainingRuntime`` (namespaced).
    :param queue_name: Kueue ``LocalQueue`` (in the training's namespace) to submit to. None: no Kueue.
    :param queue_priority_class: Kueue ``WorkloadPriorityClass`` of the workload (needs ``queue_name``).
    :param admission_timeout: Seconds the training may wait in the Kueue queue before the task fails.
    """

    name = "kubernetes"
    #: The pod or Job training this copy runs (to stop it when the task is killed).
    _engine: Any = None

    def check(self, *, env: Mapping[str, str] | None) -> None:
        """Refuse an operator ``env`` that sets the rendezvous variables or a ``secret_env`` variable."""
        clashes = sorted(set(env or {}) & set(DISTRIBUTED_VARS))
        if clashes:
            raise ValueError(f"env may not set {', '.join(clashes)}: the Kubernetes runtime sets them")
        overlap = sorted(set(env or {}) & set(self.secret_env))
        if overlap:
            raise ValueError(f"{', '.join(overlap)} is set both in env and in the runtime's secret_env")

    # -- execution (the kubernetes machinery is imported here, at execute time) -----------------------------

    def _engine_for(
        self, mode: str, spec: TrainingSpec, context: Context, callbacks: TrainingCallbacks
    ) -> Any:
        if mode == "trainjob":
            from airflow_mlops.training.kubernetes.trainjob import TrainJobTraining

            self._engine = TrainJobTraining(self, spec, context, callbacks)
        elif mode == "job":
            from airflow_mlops.training.kubernetes.job import JobTraining

            self._engine = JobTraining(self, spec, context, callbacks)
        else:
            from airflow_mlops.training.kubernetes.pod import PodTraining

            self._engine = PodTraining(self, spec, context, callbacks)
        return self._engine

    def start(self, spec: TrainingSpec, context: Context, callbacks: TrainingCallbacks) -> RawResult:
        """Create the pod (or the Job), wait for it (deferring if ``deferrable``) and return its result."""
        from airflow_mlops.training.kubernetes.manifests import missing_credentials

        try:
            self.validate(rendered=True)
        except ValueError as err:
            raise ConfigurationError(str(err), model=spec.experiment_name) from err
        places = {
            "train_data": spec.contract_env.get(contract.TRAIN_DATA),
            "valid_data": spec.contract_env.get(contract.VALID_DATA),
            "output_root (outputs, checkpoints)": spec.instance_uri,
        }
        for what, uri in places.items():
            if uri and is_local(uri):
                callbacks.log.warning(
                    "%s of task %s is a local path (%s): the pod must see it at the same path (a mounted "
                    "volume); an object-store URI needs none",
                    what, spec.task_id, uri,
                )  # fmt: skip
        if missing := missing_credentials(self, spec):
            callbacks.log.warning(
                "The pod gets no %s: the connections hold credentials, which are never copied into a pod "
                "spec. Name a Kubernetes Secret for them (KubernetesRuntime(secret_env=...) or "
                "env_from_secrets=...) unless the pod's service account gives that access.",
                ", ".join(missing),
            )
        return self._engine_for(self.mode, spec, context, callbacks).start()

    def resume(
        self,
        spec: TrainingSpec,
        context: Context,
        callbacks: TrainingCallbacks,
        event: dict[str, Any],
        state: dict[str, Any],
    ) -> RawResult:
        """Finish the pod (or Job) the trigger waited for."""
        return self._engine_for(state.get("mode") or "pod", spec, context, callbacks).resume(event, state)

    def stop(self) -> None:
        """The task was killed while waiting in the worker: delete what it started."""
        if self._engine is not None:
            self._engine.stop()
