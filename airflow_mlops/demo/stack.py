"""
A local Airflow + MLflow stack on loopback for the embedded demo and the end-to-end tests.

It starts ``mlflow server`` (SQLite backend store, local artifact directory) and the Airflow services
(api-server, scheduler, dag-processor, triggerer on SQLite with the LocalExecutor), and talks to them only
through their public HTTP APIs. Every process it starts is stopped by :meth:`LocalStack.stop`: the process
groups of the services, the model servers the example DAGs started, then whatever is left that was started
for this stack (its Airflow home or its MLflow server in the environment).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

#: The example DAGs: the wheel carries them as ``airflow_mlops/demo/dags`` (copied from the repository's
#: ``dags/`` when it is built); a checkout has them in ``dags/`` at its root.
PACKAGE_DAGS = Path(__file__).resolve().parent / "dags"
REPO_DAGS = PACKAGE_DAGS if PACKAGE_DAGS.is_dir() else Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "mlops_continuous_training"
ROLLBACK_DAG_ID = "mlops_rollback"
FINISHED = {"success", "failed"}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StackError(RuntimeError):
    """The local stack could not start or a request to it failed."""


class LocalStack:
    """
    Airflow and MLflow processes on loopback, with users ``admin`` (admin), ``reviewer`` and ``intruder``.

    :param home: Folder for every file the stack writes (Airflow home, MLflow database and artifacts, data).
    :param airflow_port: Port of the Airflow api-server (a free one if None).
    :param mlflow_port: Port of the MLflow server (a free one if None).
    :param serving_port: Port of the local model server endpoint the example DAG deploys to.
    :param approvers: Users allowed to approve promotions (``MLOPS_APPROVERS`` of the example DAG).
    :param dags_folder: Folder of the DAG files (the repository's ``dags/``).
    :param extra_env: Settings added to (or replacing) those of :meth:`settings`.
    :param extra_dag_bundles: More DAG folders, by bundle name, parsed beside *dags_folder* (each one a
        ``LocalDagBundle``; *dags_folder* is the bundle ``dags-folder``).
    """

    USERS = {"admin": "admin", "reviewer": "user", "intruder": "user"}

    def __init__(
        self,
        home: str | Path,
        airflow_port: int | None = None,
        mlflow_port: int | None = None,
        serving_port: int | None = None,
        approvers: str = "reviewer",
        dags_folder: str | Path = REPO_DAGS,
        extra_env: dict[str, str] | None = None,
        extra_dag_bundles: dict[str, str | Path] | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.airflow_port = airflow_port or free_port()
        self.mlflow_port = mlflow_port or free_port()
        self.serving_port = serving_port or free_port()
        self.serving_url = f"http://127.0.0.1:{self.serving_port}"
        self.airflow_url = f"http://127.0.0.1:{self.airflow_port}"
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self.approvers = approvers
        self.dags_folder = Path(dags_folder).resolve()
        self.extra_env = extra_env or {}
        self.extra_dag_bundles = {
            name: Path(path).resolve() for name, path in (extra_dag_bundles or {}).items()
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self._tokens: dict[str, str] = {}

    # -- configuration -------------------------------------------------------------------------
    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def data_root(self) -> Path:
        return self.home / "data"

    @property
    def source_path(self) -> Path:
        return self.home / "incoming" / "customers.csv"

    @property
    def passwords(self) -> dict[str, str]:
        return {user: f"{user}-pw" for user in self.USERS}

    def env(self) -> dict[str, str]:
        """The environment of every process of the stack: this process's, plus :meth:`settings`."""
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env.update(self.settings())
        return env

    def signing_secret(self) -> str:
        """
        The stack's signing secret: made once (random), kept in ``signing-key`` in its home (mode 0600).

        Kept across restarts of the same home, so the records of earlier runs stay verifiable.
        """
        import secrets

        path = self.home / "signing-key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def settings(self) -> dict[str, str]:
        """The settings the stack itself sets (Airflow configuration, connections, ``MLOPS_*``)."""
        settings = dict(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
                "AIRFLOW__API__PORT": str(self.airflow_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__BASE_URL": self.airflow_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{user}:{role}" for user, role in self.USERS.items()
                ),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # One api-server worker on a busy small machine: a task's first call may take longer than
                # the 5 s default, which fails the try before it starts.
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
                "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": self.mlflow_url}),
                # The key the package signs its gate, approval, release and deployment records with.
                "AIRFLOW_CONN_MLOPS_SIGNING_DEFAULT": json.dumps(
                    {"conn_type": "generic", "login": "demo", "password": self.signing_secret()}
                ),
                "MLOPS_DATA_ROOT": str(self.data_root),
                "MLOPS_SOURCE_PATH": str(self.source_path),
                "MLOPS_APPROVERS": self.approvers,
                "MLOPS_SERVING_PORT": str(self.serving_port),
                "MLFLOW_TRACKING_URI": self.mlflow_url,
                # MLflow's server-side job runner (nine more processes, for GenAI jobs) serves nothing here.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "GX_ANALYTICS_ENABLED": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.extra_dag_bundles:
            bundle = "airflow.dag_processing.bundles.local.LocalDagBundle"
            folders = {"dags-folder": self.dags_folder, **self.extra_dag_bundles}
            settings["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
                [
                    {"name": name, "classpath": bundle, "kwargs": {"path": str(path)}}
                    for name, path in folders.items()
                ]
            )
        settings.update(self.extra_env)
        return settings

    # -- processes -----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
        )
        log.close()
        self.procs[name] = proc
        return proc

    def _wait_http(self, name: str, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode}; see {self.home / 'logs' / name}.log")
            try:
                if requests.get(url, timeout=5).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise StackError(f"{name} did not answer at {url} within {timeout:.0f}s")

    def start(self, timeout: float = 240.0) -> LocalStack:
        """Set up the folders, the demo data and the databases, then start every service."""
        from airflow_mlops.demo.data import make_demo_data

        for folder in (self.airflow_home, self.data_root, self.home / "logs", self.home / "mlflow"):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.source_path.exists():
            make_demo_data(self.source_path)
        (self.airflow_home / "simple_auth_manager_passwords.json.generated").write_text(
            json.dumps(self.passwords)
        )
        try:
            airflow = [sys.executable, "-m", "airflow"]
            self._spawn(
                "mlflow",
                [
                    sys.executable, "-m", "mlflow", "server",
                    "--backend-store-uri", f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}",
                    "--artifacts-destination", str(self.home / "mlflow" / "artifacts"),
                    "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1",
                ],
            )  # fmt: skip
            migrate = subprocess.run(
                [*airflow, "db", "migrate"], env=self.env(), capture_output=True, text=True, cwd=self.home
            )
            if migrate.returncode != 0:
                raise StackError(
                    f"airflow db migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}"
                )
            self._spawn("api-server", [*airflow, "api-server", "--port", str(self.airflow_port)])
            self._spawn("scheduler", [*airflow, "scheduler"])
            self._spawn("dag-processor", [*airflow, "dag-processor"])
            self._spawn("triggerer", [*airflow, "triggerer"])
            self._wait_http("mlflow", f"{self.mlflow_url}/health", timeout)
            self._wait_http("api-server", f"{self.airflow_url}/api/v2/monitor/health", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    #: Seconds the services get to end on SIGTERM before the rest of their process groups is killed.
    STOP_GRACE = 10.0

    def stop(self) -> None:
        """
        Stop every process the stack started (and their children), model servers included, in seconds.

        The model servers the example DAGs started are stopped through their deployment target; each
        service's process group gets SIGTERM, then SIGKILL after :attr:`STOP_GRACE` seconds. Processes of the
        services that left their group, and any other process whose environment names this stack's Airflow
        home or MLflow server (a task, a trainer, a model server a watchdog started again), are killed last.
        """
        try:
            self.stop_model_servers()
        except Exception as err:  # the sweep below still stops them
            print(f"[stack] stopping the model servers: {type(err).__name__}: {err}", file=sys.stderr)
        descendants = self._descendants()
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.STOP_GRACE
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self.procs.clear()
        self._kill({*descendants, *self.started_processes()})

    def _descendants(self) -> set[Any]:
        """The processes below the services, as they are now (before stopping them reparents some)."""
        import psutil  # type: ignore[import-untyped]

        found: set[Any] = set()
        for proc in self.procs.values():
            try:
                found.update(psutil.Process(proc.pid).children(recursive=True))
            except psutil.Error:
                continue
        return found

    def started_processes(self) -> list[Any]:
        """
        Running processes started for this stack: their environment names its Airflow home or its MLflow server.

        This process and its ancestors are left out (a client may point ``MLFLOW_TRACKING_URI`` at the stack).
        Returns ``psutil.Process`` objects.
        """
        import psutil

        spared = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
        marks = {("AIRFLOW_HOME", str(self.airflow_home)), ("MLFLOW_TRACKING_URI", self.mlflow_url)}
        found = []
        for proc in psutil.process_iter():
            if proc.pid in spared:
                continue
            try:
                environ = proc.environ()
            except psutil.Error:  # gone, a zombie, or another user's
                continue
            if any(environ.get(name) == value for name, value in marks):
                found.append(proc)
        return found

    @staticmethod
    def _kill(processes: set[Any]) -> None:
        import psutil

        alive = [proc for proc in processes if proc.is_running()]
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)

    def pid(self, name: str) -> int:
        """
        Process id of the running service *name* (``scheduler``, ``triggerer``, ``api-server``...).

        The scheduler's pid is its main loop only: the LocalExecutor's workers and the task processes they
        start are its children, with their own pids.
        """
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            raise StackError(f"{name} is not running")
        return proc.pid

    def stop_model_servers(self) -> None:
        """Stop the model servers the example DAGs started (they outlive their tasks by design)."""
        serving = self.data_root / "serving"
        if not serving.is_dir():
            return
        from airflow_mlops.serving.local import LocalServerTarget

        target = LocalServerTarget(port=self.serving_port, state_dir=str(serving), mlflow_conn_id=None)
        for state in sorted(serving.glob("*/state.json")):
            target.stop(state.parent.name)

    def predict(self, records: list[dict[str, Any]]) -> tuple[str | None, Any]:
        """Ask the served model; return the version that answered and its predictions."""
        response = requests.post(
            f"{self.serving_url}/invocations", json={"dataframe_records": records}, timeout=60
        )
        response.raise_for_status()
        return response.headers.get("X-MLOps-Model-Version"), response.json()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- Airflow REST API ----------------------------------------------------------------------
    def token(self, user: str = "admin") -> str:
        if user not in self._tokens:
            response = requests.post(
                f"{self.airflow_url}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=30,
            )
            if response.status_code >= 300:
                raise StackError(
                    f"cannot log in as {user}: HTTP {response.status_code} {response.text[:200]}"
                )
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    #: Answers to a read that go away when it is asked again: Airflow 3.3.2 answers 500 for a run the scheduler
    #: created but has not started yet (and for an asset event naming it: pydantic refuses its empty
    #: ``start_date``), and a busy api-server may answer 502-504 or drop the connection.
    TRANSIENT_STATUS = frozenset({500, 502, 503, 504})

    def api(
        self, method: str, path: str, user: str = "admin", retry_for: float = 60.0, **kwargs: Any
    ) -> requests.Response:
        """
        Call the Airflow REST API as *user*.

        A read (GET) answered with a transient error (:attr:`TRANSIENT_STATUS`, a refused or dropped
        connection) is asked again for up to *retry_for* seconds; the last answer is returned (or the last
        connection error raised). Writes are sent once.
        """
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self.token(user)}"}
        deadline = time.monotonic() + (retry_for if method.upper() == "GET" else 0.0)
        while True:
            try:
                response = requests.request(
                    method, f"{self.airflow_url}/api/v2{path}", headers=headers, timeout=60, **kwargs
                )
            except requests.ConnectionError:
                if time.monotonic() >= deadline:
                    raise
            else:
                if response.status_code not in self.TRANSIENT_STATUS or time.monotonic() >= deadline:
                    return response
            time.sleep(1)

    def _ok(self, response: requests.Response) -> Any:
        if response.status_code >= 300:
            raise StackError(
                f"{response.request.method} {response.url}: HTTP {response.status_code} {response.text[:500]}"
            )
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("GET", f"/dags/{dag_id}").status_code == 200:
                return
            time.sleep(2)
        errors = self._ok(self.api("GET", "/importErrors")).get("import_errors") or []
        if errors:
            raise StackError(
                f"DAG {dag_id} was not parsed within {timeout:.0f}s; import errors: {json.dumps(errors)[:2000]}"
            )
        raise StackError(
            f"DAG {dag_id} was not parsed within {timeout:.0f}s and no file of {self.dags_folder} failed to "
            "import: that folder does not define it. Give the folder of your DAGs with --dags (and the DAG "
            "with --dag)."
        )

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Unpause *dag_id* and trigger a run with *conf* (and the run id *run_id*, if given); return the run id."""
        self.wait_for_dag(dag_id)
        self._ok(self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False}))
        # A run id of our own (Airflow's shape for manual runs) makes the request safe to send again: a busy
        # api-server on SQLite may answer 500 "Database error" for a run it then did not create.
        run_id = run_id or f"manual__{datetime.now(UTC).isoformat()}"
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}, "dag_run_id": run_id}
        deadline = time.monotonic() + 60.0
        sent = False
        while True:
            response = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
            if response.status_code == 409 and sent:
                return run_id  # the earlier request created it after all
            if response.status_code not in self.TRANSIENT_STATUS or time.monotonic() >= deadline:
                return self._ok(response)["dag_run_id"]
            sent = True
            time.sleep(1)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._ok(self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}"))["state"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The task instances of a run by task id (``state``, ``try_number``, ...), as the REST API gives them."""
        body = self._ok(self.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances"))
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {task_id: ti["state"] for task_id, ti in self.task_instances(dag_id, run_id).items()}

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 900.0
    ) -> str:
        """Wait until *task_id* reaches one of *states* (or the run ends); return the state it reached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.task_states(dag_id, run_id).get(task_id)
            if state in states:
                return state
            if self.run_state(dag_id, run_id) in FINISHED:
                return self.task_states(dag_id, run_id).get(task_id) or "none"
            time.sleep(3)
        raise StackError(f"{dag_id}/{run_id}: {task_id} did not reach {states} within {timeout:.0f}s")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in FINISHED:
                return state
            time.sleep(3)
        raise StackError(
            f"{dag_id}/{run_id} did not finish within {timeout:.0f}s: {self.task_states(dag_id, run_id)}"
        )

    def wait_for_approval_request(
        self, dag_id: str, run_id: str, task_id: str = "approve", timeout: float = 900.0, settle: float = 5.0
    ) -> str:
        """
        Wait until *task_id* asks for a decision (``awaiting_input``) or the run ends; return its state.

        Waits *settle* seconds more once the request is up: on Airflow 3.3.2 a response that lands before the
        executor has reported the parked attempt's exit makes the scheduler fail the task ("finished with
        state success, but the task instance's state attribute is queued"). A person never answers that fast.
        """
        state = self.wait_for_task_state(dag_id, run_id, task_id, {"awaiting_input", "deferred"}, timeout)
        if state in ("awaiting_input", "deferred"):
            time.sleep(settle)
        return state

    def hitl_path(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/-1/hitlDetails"

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self._ok(self.api("GET", self.hitl_path(dag_id, run_id, task_id)))

    def respond(
        self, dag_id: str, run_id: str, task_id: str, option: str, user: str = "reviewer", comment: str = ""
    ) -> requests.Response:
        """Answer a Human-in-the-loop request through the HITL REST API as *user*."""
        return self.api(
            "PATCH",
            self.hitl_path(dag_id, run_id, task_id),
            user=user,
            json={"chosen_options": [option], "params_input": {"comment": comment}},
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        body = self._ok(
            self.api(
                "GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
            )
        )
        value = body["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    # -- MLflow REST API -----------------------------------------------------------------------
    def alias_version(self, model_name: str, alias: str = "champion") -> str | None:
        response = requests.get(
            f"{self.mlflow_url}/api/2.0/mlflow/registered-models/alias",
            params={"name": model_name, "alias": alias},
            timeout=30,
        )
        if response.status_code in (400, 404):
            # No such model (RESOURCE_DOES_NOT_EXIST) or no such alias on it (INVALID_PARAMETER_VALUE).
            code = response.json().get("error_code")
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
        response.raise_for_status()
        return response.json()["model_version"]["version"]

    @property
    def required_actions_url(self) -> str:
        return f"{self.airflow_url}/required_actions"
