"""
Training runtimes: where :class:`~airflow_mlops.operators.training.TrainModelOperator` runs a trainer.

- :class:`LocalRuntime` (``runtime="local"``): a child process of the Airflow worker.
- :class:`KubernetesRuntime`: a pod built on ``KubernetesPodOperator`` (GPUs, deferrable, reattach after a
  worker restart), or, with ``num_nodes > 1``, an Indexed Job of pods with a headless Service for
  ``torchrun`` rendezvous.

The operator does everything runtimes share: it checks the data, creates (or finds again) the MLflow run,
builds the training contract, validates and records the result. A runtime only starts the trainer with that
contract and hands back what the trainer wrote to ``MLOPS_RESULT_PATH``.

This module imports no heavy library: the kubernetes client and the cncf-kubernetes operators are imported
inside :class:`KubernetesRuntime`'s methods, when the task runs, never when a DAG file is parsed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_mlops.data.storage import is_s3
from airflow_mlops.exceptions import TrainingError
from airflow_mlops.trainer import contract

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.operators.training import TrainModelOperator

#: How many of a local trainer's last output lines a TrainingError quotes.
TAIL_LINES = 20
#: Seconds a local trainer gets to exit after SIGTERM before it is killed.
KILL_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class TrainingLaunch:
    """
    One start of a trainer: who asked for it, the MLflow run, and the training contract (JSON-serialisable).

    The operator builds it before the trainer starts and hands it to the runtime; a deferred runtime gets it
    back when the task resumes.

    :param dag_id: Airflow DAG id.
    :param dag_run_id: Airflow DAG run id.
    :param task_id: Airflow task id.
    :param map_index: Map index of the task instance (-1 when not mapped).
    :param try_number: Airflow try number.
    :param mlflow_run_id: The MLflow run the trainer logs to (exists before it starts).
    :param experiment_id: Its MLflow experiment id.
    :param experiment_name: Its MLflow experiment name.
    :param instance_uri: ``<output_root>/<dag_id>/<run_id>/<task_id>[/<map_index>]``, the same for every try.
    :param contract_env: Every variable of the contract except ``MLOPS_RESULT_PATH`` (set by the runtime).
    :param attempt: Starts of the trainer in this try (a preempted pod is started again, same checkpoint URI).
    """

    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    try_number: int
    mlflow_run_id: str
    experiment_id: str
    experiment_name: str
    instance_uri: str
    contract_env: dict[str, str] = field(default_factory=dict)
    attempt: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingLaunch:
        return cls(**dict(data))

    def next_attempt(self) -> TrainingLaunch:
        """The same launch, counted as one more start."""
        return replace(self, attempt=self.attempt + 1)


class TrainingRuntime:
    """
    Where a trainer runs. Subclasses implement :meth:`start` and, if they defer, :meth:`resume`.

    A runtime object is configuration; the operator keeps its own copy. Its ``template_fields`` (if any) are
    rendered with the operator's templates.
    """

    #: Name of the runtime in logs and docs.
    name: ClassVar[str] = ""
    template_fields: Sequence[str] = ()

    def check(self, operator: TrainModelOperator) -> None:
        """Validate the runtime against the operator's arguments (no I/O); raise ValueError."""

    def start(
        self, operator: TrainModelOperator, context: Context, launch: TrainingLaunch
    ) -> dict[str, Any] | str | None:
        """
        Start the trainer and return what it wrote to ``MLOPS_RESULT_PATH`` (a dict, the raw text, or None).

        May defer instead (``operator.defer_training``); the operator then calls :meth:`resume`.
        """
        raise NotImplementedError

    def resume(
        self,
        operator: TrainModelOperator,
        context: Context,
        launch: TrainingLaunch,
        event: dict[str, Any],
        state: dict[str, Any],
    ) -> dict[str, Any] | str | None:
        """Finish a deferred start: *event* from the trigger, *state* as given to ``defer_training``."""
        raise TrainingError(f"The {self.name!r} training runtime does not defer")

    def stop(self, operator: TrainModelOperator) -> None:
        """Stop a running trainer (the task was killed)."""


class LocalRuntime(TrainingRuntime):
    """
    Run the trainer as a child process of the worker (``runtime="local"``).

    The child gets a minimal base environment, the MLflow connection's settings, the ``aws_conn_id``
    settings, the operator's ``env`` and the contract (see :meth:`TrainModelOperator.build_env`); its output
    streams into the task log; the operator's ``timeout`` stops it; killing the task stops its whole process
    group.
    """

    name = "local"

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._stop_reason: str | None = None
        self._operator: TrainModelOperator | None = None

    def __repr__(self) -> str:
        return "LocalRuntime()"

    def __deepcopy__(self, memo: dict[int, Any]) -> LocalRuntime:
        return LocalRuntime()  # holds no configuration, only the state of one run

    def start(self, operator: TrainModelOperator, context: Context, launch: TrainingLaunch) -> str | None:
        with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
            result_path = Path(tmp) / "result.json"
            env = operator.build_env({**launch.contract_env, contract.RESULT_PATH: str(result_path)})
            if not is_s3(launch.instance_uri):
                for name in ("output", "checkpoints"):
                    Path(launch.instance_uri, name).mkdir(parents=True, exist_ok=True)
            self._run(operator, env)
            if not result_path.is_file():
                return None
            try:
                return result_path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise TrainingError(
                    f"The result of the {operator.trainer_description} is not valid JSON: {err}"
                ) from err

    def _run(self, operator: TrainModelOperator, env: dict[str, str]) -> None:
        """Run the trainer as a child process, streaming its output into the task log."""
        command = operator.command
        operator.log.info("Starting trainer: %s", shlex.join(command))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._stop_reason = None
        self._operator = operator
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
            )
        except OSError as err:
            raise TrainingError(
                f"Cannot start training entrypoint {operator.entrypoint!r} of task {operator.task_id!r}: {err}"
            ) from err
        self._process = process
        timer = None
        if operator.timeout is not None:
            timer = threading.Timer(
                operator.timeout,
                self._stop_child,
                args=(f"it ran longer than its timeout of {operator.timeout:g} s",),
            )
            timer.daemon = True
            timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                operator.log.info("[trainer] %s", line)
            returncode = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
            self._process = None
        if returncode != 0 or self._stop_reason:
            if self._stop_reason:
                how = f"was stopped because {self._stop_reason} (exit code {returncode})"
            elif returncode < 0:
                how = f"was killed by signal {-returncode}"
            else:
                how = f"exited with code {returncode}"
            output = "\n".join(tail) or "(no output)"
            raise TrainingError(
                f"Training entrypoint {operator.entrypoint!r} of task {operator.task_id!r} {how}. "
                f"Last {len(tail)} lines of its output:\n{output}"
            )

    def stop(self, operator: TrainModelOperator) -> None:
        self._stop_child("the task was killed")

    def _stop_child(self, reason: str) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._stop_reason = reason
        if self._operator is not None:
            self._operator.log.warning("Stopping trainer (process group %s): %s", process.pid, reason)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- Kubernetes ------------------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}

#: Node label the NVIDIA GPU feature discovery sets to the GPU model (e.g. ``NVIDIA-H100-80GB-HBM3``).
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
#: Environment names the runtime sets for multi-node training; ``env``/``secret_env`` may not set them.
DISTRIBUTED_VARS = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "NNODES",
    "PET_MASTER_ADDR", "PET_MASTER_PORT", "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE", "PET_STANDALONE",
)  # fmt: skip


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))


def _secret_ref(value: str | Sequence[str], env_name: str) -> tuple[str, str]:
    if isinstance(value, str):
        name, sep, key = value.partition("/")
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, str) for v in value):
        (name, key), sep = value, "/"
    else:
        name, sep, key = "", "", ""
    if not sep or not name or not key:
        raise ValueError(
            f"secret_env[{env_name!r}] must name a Kubernetes Secret and key as 'secret-name/key' or "
            f"('secret-name', 'key'); got {value!r}"
        )
    return name, key


class KubernetesRuntime(TrainingRuntime):
    """
    Run the trainer in Kubernetes: one pod, or an Indexed Job of ``num_nodes`` pods.

    The pod sees the same training contract as a local trainer (``MLOPS_RESULT_PATH`` is
    ``/airflow/xcom/return.json``). Credentials never appear in the pod spec: MLflow and S3 credentials reach
    the pod only as references to Kubernetes Secrets you name (``secret_env``, ``env_from_secrets``) or
    through the pod's service account (IRSA, workload identity); only non-secret settings of the MLflow and
    AWS connections (tracking/registry URI, region, endpoint URL) are copied as plain values.

    Single node: a pod through ``KubernetesPodOperator``; its result comes back through KPO's XCom sidecar.
    With ``deferrable=True`` (default) the wait runs in the triggerer and holds no worker slot; a retry after
    a worker restart reattaches to the running pod. A pod lost to preemption, eviction or node shutdown is
    started again (up to ``max_preemptions`` times per try) with the same checkpoint URI. Other failures
    (OOMKilled, image pull, unschedulable, non-zero exit) fail the task with one line saying what happened
    and what to change.

    Multi-node (``num_nodes > 1``): an Indexed Job of ``num_nodes`` pods plus a headless Service; each pod
    gets the ``torchrun`` rendezvous variables (``PET_NNODES``, ``PET_NODE_RANK``, ``PET_NPROC_PER_NODE``,
    ``PET_MASTER_ADDR``/``PET_MASTER_PORT``, and ``MASTER_ADDR``, ``MASTER_PORT``, ``NNODES``, ``NODE_RANK``,
    ``WORLD_SIZE``). Rank 0's result comes back as its container's termination message. Disrupted pods are
    replaced by the Job controller (``podFailurePolicy``). The Job, its pods and the Service are deleted
    when the task ends, fails or is killed, and expire after ``job_ttl_seconds`` whatever happens.

    :param image: Container image holding the trainer and its dependencies. (templated)
    :param gpus: GPUs per pod (per node), set in the container's resource limits.
    :param gpu_resource: Extended resource name of the GPUs.
    :param gpu_product: Schedule only on nodes whose ``nvidia.com/gpu.product`` label has this value
        (e.g. ``"NVIDIA-H100-80GB-HBM3"``). (templated)
    :param gpu_tolerations: With ``gpus > 0``, tolerate the usual GPU node taint (key ``gpu_resource``,
        any value, effect ``NoSchedule``).
    :param tolerations: More tolerations, as Kubernetes dicts (``{"key", "operator", "value", "effect"}``).
    :param node_selector: More node labels to schedule on.
    :param cpu: CPU request (``"4"``, ``"500m"``).
    :param memory: Memory request (``"16Gi"``); also the memory limit unless ``memory_limit`` is given.
    :param cpu_limit: CPU limit (none by default: CPU limits throttle data loading).
    :param memory_limit: Memory limit; default ``memory``. The ``/dev/shm`` volume counts towards it.
    :param shm_size: Size of the memory-backed ``emptyDir`` mounted on ``/dev/shm`` (PyTorch data loader
        workers and NCCL use shared memory; the container runtime's default is 64 MiB). None: no volume.
    :param priority_class: ``priorityClassName`` of the pods.
    :param service_account: Service account of the pods (e.g. one bound to a cloud role for S3 access).
    :param image_pull_secrets: Names of Secrets holding registry credentials.
    :param image_pull_policy: ``Always``, ``IfNotPresent`` or ``Never`` (Kubernetes' default when None).
    :param namespace: Namespace of the pods; None: the connection's namespace, else ``default``. (templated)
    :param labels: More labels of the pods (and Job/Service). The runtime adds cost-attribution labels
        ``airflow-mlops/dag-id``, ``airflow-mlops/task-id``, ``airflow-mlops/run-id``, ``airflow-mlops/model``
        (values sanitized to valid label values) and ``airflow-mlops/instance``. (templated)
    :param annotations: More annotations of the pods. (templated)
    :param model_label: Value of the ``airflow-mlops/model`` label; default the MLflow experiment name.
    :param secret_env: Environment variables read from Kubernetes Secrets: ``{"MLFLOW_TRACKING_TOKEN":
        "mlflow-auth/token", "AWS_ACCESS_KEY_ID": ("s3-creds", "access-key")}`` (``valueFrom.secretKeyRef``).
    :param env_from_secrets: Secrets whose every key becomes an environment variable (``envFrom.secretRef``).
    :param volumes: More pod volumes, as Kubernetes dicts.
    :param volume_mounts: Mounts of those volumes into the trainer container, as Kubernetes dicts.
    :param num_nodes: Pods (nodes) of the training; more than one makes an Indexed Job.
    :param processes_per_node: Training processes per pod; default ``gpus`` (at least 1). With more than one
        process per pod, or more than one node, a module entrypoint is started with ``torchrun``.
    :param master_port: Rendezvous port of multi-node training.
    :param kubernetes_conn_id: Airflow ``kubernetes`` connection.
    :param config_file: Kubeconfig path (instead of the connection's).
    :param cluster_context: Kubeconfig context.
    :param in_cluster: Use the in-cluster configuration.
    :param deferrable: Wait in the triggerer (no worker slot held); False waits in the worker.
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
    """

    name = "kubernetes"
    template_fields: Sequence[str] = ("image", "namespace", "gpu_product", "labels", "annotations")

    def __init__(
        self,
        *,
        image: str,
        gpus: int = 0,
        gpu_resource: str = "nvidia.com/gpu",
        gpu_product: str | None = None,
        gpu_tolerations: bool = True,
        tolerations: Sequence[Mapping[str, Any]] = (),
        node_selector: Mapping[str, str] | None = None,
        cpu: str | None = None,
        memory: str | None = None,
        cpu_limit: str | None = None,
        memory_limit: str | None = None,
        shm_size: str | None = "1Gi",
        priority_class: str | None = None,
        service_account: str | None = None,
        image_pull_secrets: Sequence[str] = (),
        image_pull_policy: str | None = None,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        model_label: str | None = None,
        secret_env: Mapping[str, str | Sequence[str]] | None = None,
        env_from_secrets: Sequence[str] = (),
        volumes: Sequence[Mapping[str, Any]] = (),
        volume_mounts: Sequence[Mapping[str, Any]] = (),
        num_nodes: int = 1,
        processes_per_node: int | None = None,
        master_port: int = 29500,
        kubernetes_conn_id: str | None = "kubernetes_default",
        config_file: str | None = None,
        cluster_context: str | None = None,
        in_cluster: bool | None = None,
        deferrable: bool = True,
        poll_interval: float = 10.0,
        schedule_timeout: int = 600,
        startup_timeout: int = 600,
        max_preemptions: int = 3,
        termination_grace_period: int = 60,
        system_metrics: bool = True,
        job_ttl_seconds: int = 3600,
    ) -> None:
        self.image = image
        self.gpus = gpus
        self.gpu_resource = gpu_resource
        self.gpu_product = gpu_product
        self.gpu_tolerations = gpu_tolerations
        self.tolerations = [dict(t) for t in tolerations]
        self.node_selector = dict(node_selector or {})
        self.cpu = cpu
        self.memory = memory
        self.cpu_limit = cpu_limit
        self.memory_limit = memory_limit
        self.shm_size = shm_size
        self.priority_class = priority_class
        self.service_account = service_account
        self.image_pull_secrets = list(image_pull_secrets)
        self.image_pull_policy = image_pull_policy
        self.namespace = namespace
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.model_label = model_label
        self.secret_env = dict(secret_env or {})
        self.env_from_secrets = list(env_from_secrets)
        self.volumes = [dict(v) for v in volumes]
        self.volume_mounts = [dict(m) for m in volume_mounts]
        self.num_nodes = num_nodes
        self.processes_per_node = processes_per_node
        self.master_port = master_port
        self.kubernetes_conn_id = kubernetes_conn_id
        self.config_file = config_file
        self.cluster_context = cluster_context
        self.in_cluster = in_cluster
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.schedule_timeout = schedule_timeout
        self.startup_timeout = startup_timeout
        self.max_preemptions = max_preemptions
        self.termination_grace_period = termination_grace_period
        self.system_metrics = system_metrics
        self.job_ttl_seconds = job_ttl_seconds
        self.validate(rendered=False)

    # -- configuration -------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        # Deterministic (DAG serialization stores it as the rendered value of the operator's ``runtime``).
        defaults = _KUBERNETES_DEFAULTS
        shown = {k: v for k, v in vars(self).items() if not k.startswith("_") and defaults.get(k, ...) != v}
        args = ", ".join(f"{key}={value!r}" for key, value in sorted(shown.items()))
        return f"KubernetesRuntime({args})"

    @property
    def procs_per_node(self) -> int:
        """Training processes per pod."""
        return self.processes_per_node or max(self.gpus, 1)

    @property
    def uses_torchrun(self) -> bool:
        """Whether a module entrypoint is started with ``torchrun``."""
        return self.num_nodes > 1 or self.procs_per_node > 1

    def secret_refs(self) -> dict[str, tuple[str, str]]:
        """``secret_env`` as ``{ENV: (secret, key)}``."""
        return {name: _secret_ref(value, name) for name, value in self.secret_env.items()}

    def validate(self, rendered: bool = True) -> None:
        """
        Check every setting; raise ValueError naming each bad one and what is allowed.

        :param rendered: Whether templates have been rendered; before that, templated values are not checked.
        """
        errors: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                errors.append(message)

        def unless_templated(value: Any, ok: bool, message: str) -> None:
            if rendered or not _templated(value):
                check(ok, message)

        image = self.image
        unless_templated(
            image,
            isinstance(image, str) and bool(image.strip()) and not any(c.isspace() for c in image.strip()),
            f"image must be a container image reference like 'registry/trainer:1.0', got {image!r}",
        )
        for name in ("gpus", "num_nodes", "master_port", "max_preemptions", "termination_grace_period"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"{name} must be an integer >= 0, got {value!r}",
            )
        check(
            isinstance(self.num_nodes, int) and self.num_nodes >= 1,
            f"num_nodes must be >= 1, got {self.num_nodes!r}",
        )
        check(
            self.processes_per_node is None
            or (isinstance(self.processes_per_node, int) and self.processes_per_node >= 1),
            f"processes_per_node must be an integer >= 1 or None, got {self.processes_per_node!r}",
        )
        check(
            isinstance(self.master_port, int) and 1 <= self.master_port <= 65535,
            f"master_port must be a port number, got {self.master_port!r}",
        )
        check(
            isinstance(self.gpu_resource, str)
            and _label_key_ok(self.gpu_resource)
            and "/" in self.gpu_resource,
            f"gpu_resource must be an extended resource name like 'nvidia.com/gpu', got {self.gpu_resource!r}",
        )
        if self.gpu_product is not None:
            unless_templated(
                self.gpu_product,
                isinstance(self.gpu_product, str)
                and bool(_LABEL_VALUE.match(self.gpu_product))
                and 0 < len(self.gpu_product) <= 63,
                f"gpu_product must be a node label value like 'NVIDIA-H100-80GB-HBM3', got {self.gpu_product!r}",
            )
            check(self.gpus > 0 if isinstance(self.gpus, int) else False, "gpu_product needs gpus > 0")
        for name in ("cpu", "memory", "cpu_limit", "memory_limit", "shm_size"):
            value = getattr(self, name)
            check(
                value is None or (isinstance(value, str) and bool(_QUANTITY.match(value))),
                f"{name} must be a Kubernetes quantity like '4', '500m', '16Gi' or None, got {value!r}",
            )
        for name in ("priority_class", "service_account"):
            value = getattr(self, name)
            check(
                value is None
                or (isinstance(value, str) and len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))),
                f"{name} must be a Kubernetes object name (lower-case DNS subdomain) or None, got {value!r}",
            )
        if self.namespace is not None:
            unless_templated(
                self.namespace,
                isinstance(self.namespace, str)
                and len(self.namespace) <= 63
                and bool(_DNS_LABEL.match(self.namespace)),
                f"namespace must be a lower-case DNS label (e.g. 'ml-training') or None, got {self.namespace!r}",
            )
        check(
            self.image_pull_policy in (None, "Always", "IfNotPresent", "Never"),
            f"image_pull_policy must be 'Always', 'IfNotPresent', 'Never' or None, got {self.image_pull_policy!r}",
        )
        for secret in [*self.image_pull_secrets, *self.env_from_secrets]:
            check(
                isinstance(secret, str) and len(secret) <= 253 and bool(_DNS_SUBDOMAIN.match(secret)),
                f"Secret names must be lower-case DNS subdomains, got {secret!r}",
            )
        for env_name, value in self.secret_env.items():
            check(
                bool(_ENV_NAME.match(str(env_name))),
                f"secret_env key {env_name!r} is not a valid variable name",
            )
            check(
                env_name not in contract.CONTRACT_VARS and env_name not in DISTRIBUTED_VARS,
                f"secret_env may not set {env_name}: the runtime sets it",
            )
            try:
                secret, key = _secret_ref(value, env_name)
            except ValueError as err:
                errors.append(str(err))
                continue
            check(
                len(secret) <= 253 and bool(_DNS_SUBDOMAIN.match(secret)) and bool(_SECRET_KEY.match(key)),
                f"secret_env[{env_name!r}] names Secret {secret!r} key {key!r}: the Secret name must be a "
                "lower-case DNS subdomain and the key may hold only letters, digits, '-', '_' and '.'",
            )
        for mapping_name in ("labels", "node_selector"):
            mapping = getattr(self, mapping_name)
            for key, value in mapping.items():
                check(_label_key_ok(str(key)), f"{mapping_name} key {key!r} is not a valid label key")
                unless_templated(
                    value,
                    isinstance(value, str) and len(value) <= 63 and bool(_LABEL_VALUE.match(value)),
                    f"{mapping_name}[{key!r}] = {value!r} is not a valid label value (63 characters at most: "
                    "letters, digits, '-', '_', '.', starting and ending with a letter or digit)",
                )
        for key in self.annotations:
            check(_label_key_ok(str(key)), f"annotations key {key!r} is not a valid annotation key")
        for toleration in self.tolerations:
            check(
                set(toleration) <= _TOLERATION_KEYS,
                f"toleration {toleration!r} may only have the keys {sorted(_TOLERATION_KEYS)}",
            )
        for volume in self.volumes:
            check(isinstance(volume.get("name"), str), f"volume {volume!r} needs a 'name'")
        for mount in self.volume_mounts:
            check(
                isinstance(mount.get("name"), str) and isinstance(mount.get("mountPath"), str),
                f"volume mount {mount!r} needs 'name' and 'mountPath'",
            )
        for name in ("poll_interval",):
            value = getattr(self, name)
            check(
                isinstance(value, int | float) and value > 0,
                f"{name} must be a positive number, got {value!r}",
            )
        for name in ("schedule_timeout", "startup_timeout", "job_ttl_seconds"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and value > 0,
                f"{name} must be a positive number of seconds, got {value!r}",
            )
        if errors:
            raise ValueError("Invalid KubernetesRuntime: " + "; ".join(errors))

    def check(self, operator: TrainModelOperator) -> None:
        clashes = sorted(set(operator.env or {}) & set(DISTRIBUTED_VARS))
        if clashes:
            raise ValueError(f"env may not set {', '.join(clashes)}: the Kubernetes runtime sets them")
        overlap = sorted(set(operator.env or {}) & set(self.secret_env))
        if overlap:
            raise ValueError(f"{', '.join(overlap)} is set both in env and in the runtime's secret_env")

    # -- execution (the kubernetes machinery is imported here, at execute time) -----------------------------

    def start(self, operator: TrainModelOperator, context: Context, launch: TrainingLaunch) -> Any:
        from airflow_mlops.operators import _kubernetes

        return _kubernetes.start(self, operator, context, launch)

    def resume(
        self,
        operator: TrainModelOperator,
        context: Context,
        launch: TrainingLaunch,
        event: dict[str, Any],
        state: dict[str, Any],
    ) -> Any:
        from airflow_mlops.operators import _kubernetes

        return _kubernetes.resume(self, operator, context, launch, event, state)

    def stop(self, operator: TrainModelOperator) -> None:
        from airflow_mlops.operators import _kubernetes

        _kubernetes.stop(self, operator)


_KUBERNETES_DEFAULTS: dict[str, Any] = {
    k: v for k, v in vars(KubernetesRuntime(image="x")).items() if k != "image"
}


def runtime_from_env(environ: Mapping[str, str] | None = None) -> str | KubernetesRuntime:
    """
    The training runtime a deployment chose through the environment (cheap: read when a DAG file is parsed).

    - ``MLOPS_TRAINING_RUNTIME``: ``local`` (default) or ``kubernetes``;
    - with ``kubernetes``: ``MLOPS_TRAINING_IMAGE`` (required), ``MLOPS_TRAINING_GPUS`` (default 0),
      ``MLOPS_TRAINING_NAMESPACE`` (default: the connection's), ``MLOPS_TRAINING_ENV_SECRETS``
      (comma-separated Secrets whose keys become the pod's environment, e.g. MLflow and S3 credentials).

    :raises ValueError: naming the variable that is wrong.
    """
    env = os.environ if environ is None else environ
    kind = (env.get("MLOPS_TRAINING_RUNTIME") or "local").strip().lower()
    if kind == "local":
        return "local"
    if kind != "kubernetes":
        raise ValueError(f"MLOPS_TRAINING_RUNTIME must be 'local' or 'kubernetes', got {kind!r}")
    image = (env.get("MLOPS_TRAINING_IMAGE") or "").strip()
    if not image:
        raise ValueError(
            "MLOPS_TRAINING_RUNTIME=kubernetes needs MLOPS_TRAINING_IMAGE, the trainer image "
            "(built from docker/trainer-sklearn.Dockerfile or docker/trainer-torch.Dockerfile)"
        )
    gpus = (env.get("MLOPS_TRAINING_GPUS") or "0").strip()
    if not gpus.isdigit():
        raise ValueError(f"MLOPS_TRAINING_GPUS must be a whole number, got {gpus!r}")
    secrets = [s.strip() for s in (env.get("MLOPS_TRAINING_ENV_SECRETS") or "").split(",") if s.strip()]
    return KubernetesRuntime(
        image=image,
        gpus=int(gpus),
        namespace=(env.get("MLOPS_TRAINING_NAMESPACE") or "").strip() or None,
        env_from_secrets=secrets,
    )


def resolve_runtime(runtime: str | TrainingRuntime) -> TrainingRuntime:
    """
    The runtime object for *runtime*: ``"local"`` or a :class:`TrainingRuntime` (copied).

    :raises ValueError: naming what is accepted.
    """
    import copy

    if isinstance(runtime, TrainingRuntime):
        return copy.deepcopy(runtime)
    if runtime == "local":
        return LocalRuntime()
    raise ValueError(
        f"runtime must be one of 'local'; got {runtime!r}. For Kubernetes pass a runtime object: "
        "runtime=KubernetesRuntime(image='registry/trainer:1.0', gpus=1) "
        "(from airflow_mlops.runtimes import KubernetesRuntime)"
    )
