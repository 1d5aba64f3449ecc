"""
No credential reaches anything a user, a log reader or a pod sees: not even one written into a URL.

The MLflow connection's host carries ``user:password@`` (and other connections a plain password, a token and
AWS keys). MLflow is the session's real tracking server behind a loopback gateway that records which requests
carry those credentials, so the tasks below prove the credentials were used while the test greps
everything the package shows or passes on for each secret: task logs, XCom, rendered template fields of every
operator of the example DAGs, the approval request, pod, Job and Service manifests, trigger and deferral
arguments, MLflow tags and params, hook descriptions, links and exception messages.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import runpy
import secrets
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.demo.data import make_demo_data
from tests.conftest import REPO, free_port, set_connection
from tests.support.deferred import k8s_context

pytestmark = pytest.mark.integration

_TAG = secrets.token_hex(4)
USER = "mlops"
URL_PASSWORD = f"S3cr3t-url-{_TAG}"
PLAIN_PASSWORD = f"S3cr3t-plain-{_TAG}"
TOKEN = f"S3cr3t-token-{_TAG}"
AWS_KEY_ID = f"AKIAS3CR3T{_TAG.upper()}"
AWS_SECRET = f"S3cr3t-aws-{_TAG}"
SIGNING_SECRET = f"S3cr3t-signing-key-{_TAG}-{'k' * 24}"
SECRETS = {
    "signing key": SIGNING_SECRET,
    "url password": URL_PASSWORD,
    "plain password": PLAIN_PASSWORD,
    "token": TOKEN,
    "aws key id": AWS_KEY_ID,
    "aws secret": AWS_SECRET,
}
DAGS = sorted((REPO / "dags").glob("*.py"))
MODEL = f"secrets_model_{_TAG}"
UPSTREAM_OF_APPROVAL = ["ingest", "validate", "drift", "train", "register", "evaluate"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "authorization", "content-length"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class AuthGateway:
    """
    A loopback gateway in front of the real MLflow server that records which requests carry the credentials.

    It forwards every request, so that the greps below see what leaks even where credentials were not sent.
    """

    ACCEPTED = {_basic(USER, URL_PASSWORD), _basic(USER, PLAIN_PASSWORD), f"Bearer {TOKEN}"}

    def __init__(self, upstream: str):
        self.accepted: list[str] = []
        self.unauthenticated: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                auth = self.headers.get("Authorization")
                if auth in gateway.ACCEPTED:
                    gateway.accepted.append(auth)
                elif not self.path.startswith("/health"):  # public, as in MLflow's own basic-auth app
                    gateway.unauthenticated.append(f"{self.command} {self.path}")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                request = urllib.request.Request(
                    upstream + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        status, reply_headers, data = response.status, response.headers, response.read()
                except urllib.error.HTTPError as err:
                    status, reply_headers, data = err.code, err.headers, err.read()
                kept = {k: v for k, v in reply_headers.items() if k.lower() not in _HOP_BY_HOP}
                self._reply(status, kept, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway(mlflow_server):
    gateway = AuthGateway(mlflow_server.uri)
    yield gateway
    gateway.close()


@pytest.fixture
def connections(gateway, tmp_path):
    """The example DAGs' connections, holding every kind of secret (restored after the test)."""
    set_connection(
        "mlflow_default", conn_type="mlflow", host=f"http://{USER}:{URL_PASSWORD}@127.0.0.1:{gateway.port}"
    )
    set_connection("mlflow_plain", conn_type="mlflow", host=gateway.uri, login=USER, password=PLAIN_PASSWORD)
    set_connection("mlflow_token", conn_type="mlflow", host=gateway.uri, extra={"token": TOKEN})
    # The key the gate decision is signed with (the evaluate task signs it).
    set_connection("mlops_signing_default", conn_type="generic", login="k-secrets", password=SIGNING_SECRET)
    set_connection(
        "aws_default", conn_type="aws", login=AWS_KEY_ID, password=AWS_SECRET,
        extra={"endpoint_url": f"http://127.0.0.1:{free_port()}", "region_name": "eu-west-3"},
    )  # fmt: skip
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://kubernetes.invalid"}}],
        "users": [{"name": "u", "user": {"token": "kube-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c",
    }))  # fmt: skip
    set_connection("kubernetes_default", conn_type="kubernetes", extra={"kube_config_path": str(kubeconfig)})


class Evidence:
    """Everything the test collected, by where it was found; :meth:`leaks` names where a secret is."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def add(self, where: str, value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value, default=repr, sort_keys=True)
        self.items[where] = self.items.get(where, "") + "\n" + text

    def error(self, where: str, call) -> BaseException | None:
        """Run *call*; record the message (and chained messages) of what it raised."""
        try:
            call()
        except BaseException as err:  # noqa: BLE001 - every exception message is evidence
            chain, current = [], err
            while current is not None:
                chain.append(f"{type(current).__name__}: {current} {current.args!r}")
                current = current.__cause__ or current.__context__
            self.add(f"exception: {where}", "\n".join(chain))
            return err
        return None

    def leaks(self) -> dict[str, list[str]]:
        return {
            where: sorted(name for name, secret in SECRETS.items() if secret in text)
            for where, text in self.items.items()
            if any(secret in text for secret in SECRETS.values())
        }


class RunXComs:
    """``ti`` for rendering a task of the example DAG: ``xcom_pull`` answers with what the test run pushed."""

    def __init__(self, values: dict[str, Any], task_id: str):
        self.values, self.task_id = values, task_id
        self.dag_id, self.run_id, self.try_number, self.map_index = "mlops_continuous_training", "r", 1, -1

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        value = copy.deepcopy(self.values.get(task_ids))
        # Each key of a result is an XCom of its own too (task.output["key"] pulls it).
        return value if key == "return_value" else (value or {}).get(key)


def _run_xcoms(dag_run) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return {row.task_id: XComModel.deserialize_value(row) for row in rows if row.key == "return_value"}


def _rendered_fields(dag_run) -> dict[str, Any]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(
            dag_id=dag_run.dag_id, run_id=dag_run.run_id
        )
        return {row.task_id: row.rendered_fields for row in rows}


def _render(task, params: dict[str, Any], xcoms: dict[str, Any]) -> dict[str, Any]:
    """Render *task*'s template fields with Airflow's own rendering, as a worker does before execute."""
    ti = RunXComs(xcoms, task.task_id)
    context = {
        "params": params, "ti": ti, "task_instance": ti, "task": task, "run_id": "r", "dag": task.dag,
        "dag_run": type(
            "DagRun", (), {"run_id": "r", "conf": {}, "dag_id": task.dag_id, "run_after": datetime.now(UTC)}
        )(),
        "triggering_asset_events": {},
    }  # fmt: skip
    task.render_template_fields(context)
    return {field: getattr(task, field) for field in task.template_fields}


def _params(dag, conf: dict[str, Any]) -> dict[str, Any]:
    return {**dag.params.dump(), **conf}


def _mlflow_records(mlflow_server, experiment_names: list[str]) -> dict[str, Any]:
    """Tags and params of the runs, model versions and registered models written (read past the gateway)."""
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.uri)
    records: dict[str, Any] = {}
    for name in experiment_names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            continue
        for run in client.search_runs([experiment.experiment_id]):
            records[f"run {run.info.run_id}"] = {
                "tags": run.data.tags, "params": run.data.params, "artifact_uri": run.info.artifact_uri,
            }  # fmt: skip
    for model in client.search_registered_models(f"name = '{MODEL}'"):
        records[f"model {model.name}"] = {"tags": model.tags, "aliases": model.aliases}
        for version in client.search_model_versions(f"name = '{model.name}'"):
            records[f"version {version.version}"] = {"tags": version.tags, "source": version.source}
    return records


def _log_files(session_dir: Path) -> str:
    logs = session_dir / "airflow" / "logs"
    return (
        "\n".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file())
        if logs.exists()
        else ""
    )


def _pods_and_triggers(evidence: Evidence, conn_id: str, train_data: str, valid_data: str, tmp_path) -> None:
    """Build the Kubernetes runtime's pod, Job and Service and every trigger for MLflow connection *conn_id*."""
    from airflow_mlops.operators.training import KubernetesConnection, KubernetesRuntime, TrainModelOperator
    from airflow_mlops.serving.kserve import KServeTarget
    from airflow_mlops.serving.status import Deployment
    from airflow_mlops.training.kubernetes.job import render_job
    from airflow_mlops.training.kubernetes.pod import render_pod
    from airflow_mlops.triggers.new_data import NewDataTrigger
    from airflow_mlops.triggers.training import KubernetesTrainingJobTrigger

    connection = KubernetesConnection(conn_id="kubernetes_default", namespace="ml")
    for nodes in (1, 2):
        runtime = KubernetesRuntime(
            image="registry.example.com/trainer:1", connection=connection, num_nodes=nodes
        )
        op = TrainModelOperator(
            task_id="train", entrypoint="airflow_mlops.trainer.examples.sklearn_classifier",
            train_data=train_data, valid_data=valid_data, experiment_name=MODEL, runtime=runtime,
            mlflow_conn_id=conn_id, aws_conn_id="aws_default", output_root=str(tmp_path / "runs"),
        )  # fmt: skip
        context = k8s_context("mlops_continuous_training", run_id=f"secrets-{conn_id}-{nodes}")
        spec = op._prepare(context)  # the real preparation: data checks, the MLflow run, the contract
        where = f"{conn_id}, {nodes} node(s)"
        evidence.add(f"deferral kwargs ({where})", spec.to_dict())
        evidence.add(f"training spec repr ({where})", repr(spec))
        evidence.add(f"hook ({where})", [op.hook.describe(), op.hook.tracking_uri, op.hook.registry_uri])
        if nodes == 1:
            evidence.add(f"pod spec ({where})", render_pod(runtime, spec, context))
        else:
            job, service = render_job(runtime, spec, context, name="job-train-secrets", namespace="ml")
            evidence.add(f"Indexed Job ({where})", job)
            evidence.add(f"Service ({where})", service)
        evidence.add(f"trainer env shown ({where})", op.remote_env())
    triggers = [
        KubernetesTrainingJobTrigger(
            job_name="job-train-secrets", namespace="ml", connection=connection.to_dict()
        ),
        KServeTarget(namespace="ml").ready_trigger(
            Deployment(MODEL, "1", f"models:/{MODEL}/1", "kserve", "", "", details={"name": "m"}), 60
        ),
        NewDataTrigger(source="s3://bucket/incoming/*.csv", dataset_name=MODEL, aws_conn_id="aws_default"),
    ]
    for trigger in triggers:
        evidence.add(f"trigger {type(trigger).__name__}", trigger.serialize())


def _errors(evidence: Evidence) -> set[str]:
    """Record the exception messages of misconfigured or unreachable connections; return what did not raise."""
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.hooks.storage import StorageHook
    from airflow_mlops.serving.kserve import KServeTarget

    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    set_connection("mlflow_down", conn_type="mlflow", host=f"http://{USER}:{URL_PASSWORD}@{down}")
    set_connection(
        "mlflow_conflict", conn_type="mlflow", host=f"https://{USER}:{URL_PASSWORD}@mlflow.example.com",
        password=PLAIN_PASSWORD,
    )  # fmt: skip
    set_connection("mlflow_db", conn_type="mlflow", host=f"postgresql://{USER}:{URL_PASSWORD}@db/mlflow")
    set_connection(
        "aws_url_creds", conn_type="aws",
        extra={"endpoint_url": f"http://{AWS_KEY_ID}:{AWS_SECRET}@127.0.0.1:9000"},
    )  # fmt: skip
    raised = {
        "unreachable server": evidence.error(
            "unreachable server", lambda: MLflowHook("mlflow_down").get_conn()
        )
    }
    evidence.add("test_connection of an unreachable server", MLflowHook("mlflow_down").test_connection())
    raised["login/password differ"] = evidence.error(
        "login/password differ", lambda: MLflowHook("mlflow_conflict").tracking_uri
    )
    raised["database URI with a password"] = evidence.error(
        "database URI with a password", lambda: MLflowHook("mlflow_db").tracking_uri
    )
    raised["S3 endpoint URL with keys"] = evidence.error(
        "S3 endpoint URL with keys", lambda: StorageHook("aws_url_creds").get_conn()
    )
    raised["KServe endpoint URL with credentials"] = evidence.error(
        "KServe endpoint URL with credentials",
        lambda: KServeTarget(endpoint_url=f"https://{USER}:{URL_PASSWORD}@models.example.com"),
    )
    raised["missing model"] = evidence.error(
        "missing model", lambda: MLflowHook().client.get_registered_model(f"no_such_model_{_TAG}")
    )
    return {where for where, err in raised.items() if err is None}


def test_no_secret_reaches_logs_xcom_fields_pods_triggers_mlflow_or_errors(
    connections, gateway, mlflow_server, airflow_db, session_dir, tmp_path, capfd
):
    from airflow.sdk.log import _secrets_masker

    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.links import model_version_url, run_url

    evidence = Evidence()
    incoming = Path(os.environ["MLOPS_DATA_ROOT"]) / "incoming"  # inside the allowed sources
    incoming.mkdir(parents=True, exist_ok=True)
    source = make_demo_data(incoming / f"{MODEL}.csv", rows=400)
    conf = {"model_name": MODEL, "data_path": str(source)}
    example = runpy.run_path(str(REPO / "dags" / "continuous_training.py"))["dag"]

    # End to end through Airflow: the tasks up to the approval talk to MLflow with the URL's credentials.
    subset = example.partial_subset(task_ids=UPSTREAM_OF_APPROVAL, include_upstream=True)
    dag_run = subset.test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    xcoms = _run_xcoms(dag_run)
    evidence.add("XCom", xcoms)
    evidence.add("rendered fields stored by the run", _rendered_fields(dag_run))

    # Every template field of every operator of every example DAG, rendered with that run's XCom values.
    for path in DAGS:
        for dag in {
            d.dag_id: d for d in runpy.run_path(str(path)).values() if hasattr(d, "task_dict")
        }.values():
            dag_conf = conf if dag.dag_id == example.dag_id else {"model_name": MODEL, "reason": "test"}
            for task in dag.tasks:
                evidence.add(
                    f"rendered {dag.dag_id}.{task.task_id}", _render(task, _params(dag, dag_conf), xcoms)
                )
                if task.task_id == "approve":
                    task.prepare_request()  # what the approver reads
                    evidence.add("approval request", {"subject": task.subject, "body": task.body})
                    assert "accuracy" in task.body
                evidence.add(
                    f"links of {dag.dag_id}.{task.task_id}",
                    [getattr(task, a, "") for a in ("mlflow_run_url", "mlflow_model_version_url")],
                )

    # Pods, Jobs, Services and triggers, for every kind of MLflow credentials.
    ingest = xcoms["ingest"]
    for conn_id in ("mlflow_default", "mlflow_plain", "mlflow_token"):
        _pods_and_triggers(evidence, conn_id, ingest["splits"]["train"], ingest["splits"]["valid"], tmp_path)
    hook = MLflowHook()
    evidence.add("hook", [hook.describe(), hook.tracking_uri, hook.registry_uri, repr(hook)])
    evidence.add(
        "links", [run_url(hook.tracking_uri, "1", "abc"), model_version_url(hook.tracking_uri, MODEL, 1)]
    )
    evidence.add("MLFLOW_TRACKING_URI of a child process", hook.child_env()["MLFLOW_TRACKING_URI"])
    not_raised = _errors(evidence)

    evidence.add("MLflow", _mlflow_records(mlflow_server, [MODEL]))
    captured = capfd.readouterr()
    evidence.add("task logs", captured.out + captured.err + _log_files(session_dir))

    leaks = evidence.leaks()
    assert not leaks, "secrets found in:\n" + "\n".join(
        f"- {where}: {names}" for where, names in leaks.items()
    )
    assert not_raised == set()  # each misconfiguration above is refused
    assert states == dict.fromkeys(UPSTREAM_OF_APPROVAL, "success"), states
    assert _basic(USER, URL_PASSWORD) in gateway.accepted  # the URL's credentials were sent
    assert gateway.unauthenticated == []  # and every request the package sent carried credentials
    # The URL's password is known to Airflow's secret masker, like the connection's own password.
    assert URL_PASSWORD not in _secrets_masker().redact(f"connecting with {URL_PASSWORD}")


def test_credentials_in_the_host_are_used_and_the_uri_shown_is_clean(connections, gateway):
    from airflow_mlops.hooks.mlflow import MLflowHook

    hook = MLflowHook()
    hook.client.search_experiments(max_results=1)

    assert hook.tracking_uri == gateway.uri
    assert hook.child_env()["MLFLOW_TRACKING_USERNAME"] == USER
    assert hook.child_env()["MLFLOW_TRACKING_PASSWORD"] == URL_PASSWORD
    assert _basic(USER, URL_PASSWORD) in gateway.accepted


def test_the_same_credentials_in_the_host_and_the_connection_are_accepted(gateway):
    from airflow_mlops.hooks.mlflow import MLflowHook

    set_connection(
        "mlflow_both", conn_type="mlflow", host=f"http://{USER}:{URL_PASSWORD}@127.0.0.1:{gateway.port}",
        login=USER, password=URL_PASSWORD,
    )  # fmt: skip
    hook = MLflowHook("mlflow_both")
    hook.client.search_experiments(max_results=1)

    assert hook.tracking_uri == gateway.uri


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"host": f"https://{USER}:{URL_PASSWORD}@mlflow.example.com", "password": PLAIN_PASSWORD},
            "two different passwords",
            id="password-differs",
        ),
        pytest.param(
            {"host": f"https://{USER}:{URL_PASSWORD}@mlflow.example.com", "login": "someone-else"},
            "two different user names",
            id="login-differs",
        ),
        pytest.param(
            {"host": f"postgresql://{USER}:{URL_PASSWORD}@db/mlflow"}, "carries a password", id="database-uri"
        ),
        pytest.param(
            {
                "host": "https://mlflow.example.com",
                "extra": {"registry_uri": f"sqlite://{USER}:{URL_PASSWORD}@x/db"},
            },
            "registry_uri extra",
            id="registry-uri",
        ),
        pytest.param(
            {"host": f"https://{USER}:S3cr3t/with-slash@mlflow.example.com"},
            "must be percent-encoded",
            id="unencoded-slash",
        ),
    ],
)
def test_credentials_in_a_uri_that_cannot_be_moved_are_refused_without_the_secret(fields, message):
    from airflow_mlops.exceptions import ConnectionSetupError
    from airflow_mlops.hooks.mlflow import MLflowHook

    set_connection("mlflow_refused", conn_type="mlflow", **fields)

    with pytest.raises(ConnectionSetupError, match=message) as err:
        MLflowHook("mlflow_refused").tracking_uri  # noqa: B018
    assert "'mlflow_refused'" in str(err.value)
    assert URL_PASSWORD not in str(err.value)
    assert "S3cr3t" not in str(err.value)
