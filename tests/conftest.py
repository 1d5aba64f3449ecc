"""
Shared test fixtures: real services on loopback, started once per test session.

- ``airflow_db``: a migrated Airflow metadata database (SQLite) in a temporary AIRFLOW_HOME.
- ``mlflow_server``: a real ``mlflow server`` process (SQLite backend store, proxied local artifacts).
- ``s3_server``: a real S3-compatible HTTP server (moto in server mode) in its own process.
- ``spark``: one real local Spark (``local[1]``, its driver a Java process) shared by every Spark test; the
  connection ``spark_default`` points at it.

Airflow reads its configuration when first imported, so the environment is set here, before any test
module imports Airflow.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="airflow-mlops-tests-"))

os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
os.environ["AIRFLOW__CORE__PARALLELISM"] = "2"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"
os.environ["MLOPS_DATA_ROOT"] = str(_SESSION_DIR / "data")
# Tests read sources from pytest's temporary folders and from emulated buckets of any name.
os.environ.setdefault("AIRFLOW__MLOPS__ALLOWED_SOURCES", f"{tempfile.gettempdir()},s3://*,gs://*,abfs://*")
# The key the package signs its gate, approval, release and deployment records with (airflow_mlops.signing),
# the same for in-process tasks and the live stack.
TEST_SIGNING_CONNECTION = json.dumps(
    {"conn_type": "generic", "login": "test-k1", "password": secrets.token_urlsafe(48)}
)
os.environ["AIRFLOW_CONN_MLOPS_SIGNING_DEFAULT"] = TEST_SIGNING_CONNECTION
# Keep MLflow's own defaults (./mlflow.db, ./mlruns) out of the working tree.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_DIR / 'unused-mlflow.db'}")
(_SESSION_DIR / "airflow").mkdir(parents=True, exist_ok=True)

# Only now may Airflow be imported. skops probes every importable module when it loads a model, which trips
# Airflow's deprecated-import shims thousands of times; those warnings say nothing about this project.
from airflow.utils.deprecation_tools import DeprecatedImportWarning  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecatedImportWarning)

ARTIFACTS = Path(os.environ.get("MLOPS_TEST_ARTIFACTS", REPO / "test-artifacts"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(what: str, ready, timeout: float, proc: subprocess.Popen | None) -> None:
    """Wait until ``ready()`` returns without OSError; fail early when *proc* exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {what} exited with {proc.returncode}")
        try:
            ready()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{what} did not answer within {timeout}s")


def wait_for_http(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    _wait(url, lambda: urllib.request.urlopen(url, timeout=5).close(), timeout, proc)


def wait_for_port(port: int, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on loopback *port* (a server whose root answers an error)."""
    _wait(f"port {port}", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close(), timeout, proc)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def bin_path(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def set_connection(conn_id: str, **fields) -> None:
    """Define an Airflow connection through the environment, as a deployment would."""
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(fields)


@pytest.fixture(autouse=True)
def _isolate_process_state():
    """
    Undo what one test leaves in this process for the next: environment variables (connections, and the
    MLFLOW_* variables ``mlflow.set_tracking_uri`` / ``set_registry_uri`` write), MLflow's global URIs and its
    active experiment.
    An Airflow task runs in a process of its own, so operators may set them; tests share one process.
    """
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(before.get("MLFLOW_TRACKING_URI", ""))
        mlflow.set_registry_uri("")
        # mlflow.set_experiment() in a test (tests/support/deploy.py) leaves a process-wide active experiment,
        # which makes a later test's start_run(run_id=...) of another experiment fail; MLflow has no public
        # way to unset it.
        mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata database for ``dag.test()``."""
    from airflow.utils.db import initdb

    initdb()
    return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


class _LoopbackServer:
    """A server process of the test session on a free loopback port, its output in a log file under *root*."""

    def __init__(self, root: Path, log_name: str):
        self.port = free_port()
        self.log = open(root / log_name, "wb")  # noqa: SIM115

    def _spawn(self, args: list[str], **kwargs) -> None:
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, **kwargs)

    def activate(self) -> None:
        """Point the session's connections or environment at this server (again after each test)."""

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def _session_server(name: str, start):
    """A session fixture's body: *start* (a folder of the session -> a server), activated, stopped at the end."""
    root = _SESSION_DIR / name
    root.mkdir()
    server = start(root)
    server.activate()
    yield server
    server.stop()


class MLflowServer(_LoopbackServer):
    def __init__(self, root: Path):
        super().__init__(root, "mlflow-server.log")
        self.root = root
        self.uri = f"http://127.0.0.1:{self.port}"
        self._spawn(
            [
                bin_path("mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination", str(root / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            ],
            cwd=root,
            # MLflow's server-side job runner (nine more processes, for GenAI jobs) serves no test.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )  # fmt: skip
        wait_for_http(f"{self.uri}/health", proc=self.proc)

    def activate(self) -> None:
        set_connection("mlflow_default", conn_type="mlflow", host=self.uri)


@pytest.fixture(scope="session")
def mlflow_server():
    """A real MLflow tracking server on loopback; ``mlflow_default`` points at it."""
    yield from _session_server("mlflow", MLflowServer)


class S3Server(_LoopbackServer):
    def __init__(self, root: Path):
        super().__init__(root, "s3-server.log")
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._spawn([bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)])
        wait_for_http(f"{self.endpoint_url}/moto-api/", proc=self.proc)

    def activate(self) -> None:
        """Point ``aws_default`` at this server (again: each test's environment is restored after it)."""
        set_connection(
            "aws_default", conn_type="aws", login="testing", password="testing",
            extra={"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
        )  # fmt: skip

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id="testing",
            aws_secret_access_key="testing", region_name="us-east-1",
        )  # fmt: skip


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on loopback; ``aws_default`` points at it through ``endpoint_url``."""
    yield from _session_server("s3", S3Server)


class GcsServer(_LoopbackServer):
    """A real GCS-compatible server (``gcp-storage-emulator``, in memory) on loopback."""

    def __init__(self, root: Path):
        super().__init__(root, "gcs-server.log")
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._spawn(
            [bin_path("gcp-storage-emulator"), "start", "--host=127.0.0.1", f"--port={self.port}", "--in-memory"]
        )
        wait_for_http(f"{self.endpoint_url}/storage/v1/b", proc=self.proc)

    def activate(self) -> None:
        """Point gcsfs at this server (again: each test's environment is restored after it)."""
        os.environ["STORAGE_EMULATOR_HOST"] = self.endpoint_url


@pytest.fixture(scope="session")
def gcs_server():
    """
    A real GCS-compatible server on loopback, reached as gcsfs reaches any emulator (``STORAGE_EMULATOR_HOST``).

    Without the Google provider Airflow registers no ``gs`` filesystem, so ``gs://`` URIs use gcsfs' own
    defaults, as a trainer does.
    """
    pytest.importorskip("gcsfs", reason="gcsfs is not installed (the floor's environment)")
    yield from _session_server("gcs", GcsServer)


# Azurite's documented development account (public, the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Azurite(_LoopbackServer):
    """A real Azure Blob Storage server (Azurite, in memory) on loopback."""

    def __init__(self, root: Path, command: str):
        super().__init__(root, "azurite.log")
        self.endpoint_url = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint_url};"
        )
        self._spawn([
            command, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--loose",
        ])  # fmt: skip
        wait_for_port(self.port, proc=self.proc)

    def activate(self) -> None:
        """Define the ``azurite`` connection (again: each test's environment is restored after it)."""
        set_connection("azurite", conn_type="azure_data_lake", extra={"connection_string": self.connection_string})


def azurite_command() -> str | None:
    """Azurite's blob server: the one scripts/setup.sh installs into the virtualenv, else one on the PATH."""
    local = Path(sys.prefix) / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azurite():
    """
    Azurite on loopback; the Airflow connection ``azurite`` (Azure Data Lake, a connection string) reaches it.

    ``abfs://azurite@<container>/...`` goes through the Microsoft Azure provider's filesystem and that
    connection, as ``ObjectStoragePath`` does.
    """
    pytest.importorskip("adlfs", reason="adlfs is not installed (the floor's environment)")
    command = azurite_command()
    if command is None:
        pytest.skip("Azurite is not installed (scripts/setup.sh installs it with npm)")
    yield from _session_server("azurite", lambda root: Azurite(root, command))


SPARK_MASTER = "local[1]"


@pytest.fixture(scope="session")
def spark():
    """
    One local Spark for the whole session: one core, a small driver heap, no UI, one shuffle partition.

    The operators' ``SparkHook`` builds its session with the same master, so it gets this one
    (``getOrCreate``) instead of starting a second JVM.
    """
    if shutil.which("java") is None:
        pytest.skip("java is not installed (apt-get install openjdk-17-jre-headless): no local Spark")
    pytest.importorskip("pyspark", reason="the spark extra is not installed (the floor's environment)")
    from pyspark.sql import SparkSession

    root = _SESSION_DIR / "spark"
    root.mkdir()
    os.environ["PYSPARK_PYTHON"] = sys.executable  # Python UDFs run in this interpreter, as the hook arranges
    session = (
        SparkSession.builder.master(SPARK_MASTER).appName("airflow-mlops-tests")
        .config("spark.driver.memory", "768m").config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1").config("spark.default.parallelism", "1")
        .config("spark.ui.showConsoleProgress", "false").config("spark.sql.warehouse.dir", str(root / "warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={root}")
        .getOrCreate()
    )  # fmt: skip
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its closing words would go to closed streams


@pytest.fixture
def spark_default(spark):
    """The local Spark, with the ``spark_default`` connection pointing at it."""
    set_connection("spark_default", conn_type="mlops_spark", host=SPARK_MASTER)
    return spark


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A fresh local snapshot root for one test."""
    root = tmp_path / "data-root"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def live_kube():
    """
    The Kubernetes API-server stand-in (KServe controller and predictor) of the live stack, on loopback.

    It serves from this process; the stack's task processes reach it through the ``kubernetes_kill``
    connection.
    """
    from tests.support.kubernetes import KubeApiStub

    with KubeApiStub() as stub:
        yield stub


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory, live_kube):
    """
    Live Airflow services and an MLflow server on loopback (``LocalStack``), shared by the live tests.

    Besides the repository's DAGs it parses the kill-point DAGs (bundle ``kill-points``, tests/kill/dags/),
    with their fault plan, serving port and Kubernetes connection in its environment.
    """
    from airflow_mlops.demo.stack import LocalStack
    from tests.kill.support import KILL_DAGS, stack_settings

    home = tmp_path_factory.mktemp("live-stack")
    live = LocalStack(
        home,
        extra_env={
            **stack_settings(home, live_kube, free_port()),
            "AIRFLOW_CONN_MLOPS_SIGNING_DEFAULT": TEST_SIGNING_CONNECTION,
            "MLOPS_REGRESSION_SERVING_PORT": str(free_port()),  # dags/regression.py's model server
        },
        extra_dag_bundles={"kill-points": KILL_DAGS},
    )
    live.start()
    try:
        yield live
    finally:
        live.stop()
        # Keep the service and task logs as test artifacts.
        for source, name in (
            (home / "logs", "live-stack-logs"),
            (live.airflow_home / "logs", "live-stack-task-logs"),
        ):
            if source.exists():
                shutil.copytree(source, ARTIFACTS / name, dirs_exist_ok=True)


#: pytest-timeout's limit for a live test (pyproject.toml sets the others'), counting the start of the live stack
#: (about two minutes on a 2-core machine) in the first test that uses it. A test that needs more says so.
LIVE_TIMEOUT = 600


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("live") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LIVE_TIMEOUT))


@functools.cache
def _is_live_module(path: Path) -> bool:
    """Whether the test module at *path* holds live tests (it says so with ``pytest.mark.live``)."""
    try:
        return "pytest.mark.live" in path.read_text()
    except OSError:
        return False


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may not be installed
def pytest_xdist_make_scheduler(config, log):
    """
    With pytest-xdist (``-n 2``): a module's tests run on one worker, in order, with its module fixtures made
    once, and every live module runs on the same worker, so that there is one live stack at a time. The live
    modules, the longest chain of the suite, start first; the other worker takes the rest meanwhile.

    Modules are told apart by path here because ``xdist_group`` markers have no effect with pytest 9.2 (pytest-xdist
    3.8 renames a test's node id, which pytest 9.2 no longer reads).
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModulesLiveTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "live" if _is_live_module(config.rootpath / module) else module

        def _assign_work_unit(self, node: Any) -> None:
            if "live" in self.workqueue:
                self.workqueue.move_to_end("live", last=False)
            super()._assign_work_unit(node)

    return ModulesLiveTogether(config, log)


@pytest.fixture(autouse=True)
def _leave_the_live_stack_as_found(request):
    """
    A live test leaves its stack as it found it, passed or failed: the DAG runs it started (or that started
    because of it, from an Asset event) are ended (marked failed), so that no run of it holds an executor slot
    or an approval request that a later test's run would queue behind; DAGs are paused as they were.
    The test errors if something could not be put back.
    """
    name = next((n for n in ("live_stack", "stack") if n in request.fixturenames), None)
    if name is None or request.node.get_closest_marker("live") is None:
        yield
        return
    from airflow_mlops.demo.stack import LocalStack
    from tests.support.live import restore, snapshot

    stack = request.getfixturevalue(name)
    if not isinstance(stack, LocalStack):
        yield
        return
    before = snapshot(stack)
    yield
    left = restore(stack, before)
    assert not left, f"the test left the live stack changed: {left}"
