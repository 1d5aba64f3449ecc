"""
The data root on every object store, against real servers on loopback: S3 (moto), GCS (gcp-storage-emulator)
and Azure Blob Storage (Azurite, through an Airflow connection named in the URI as ``ObjectStoragePath`` does).

A ``dag.test()`` run wires ingest -> validate -> drift with ``.output``; the snapshot lands in the store, reads
back as the source, and a second ingest writes nothing. A Parquet object is copied within its store, never
through the worker, and fingerprinted from its listing.
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime

import pandas as pd
import pytest

from airflow_mlops.data.snapshots import load_manifest, read_snapshot
from airflow_mlops.data.storage import Storage
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.dags import serialize_dag

pytestmark = pytest.mark.integration


def _s3(request) -> str:
    server = request.getfixturevalue("s3_server")
    server.activate()
    bucket = f"mlops-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


def _created(protocol: str, conn: str = "") -> str:
    """A new bucket (container) of the fsspec store of *protocol*, as a URI naming connection *conn*."""
    name = f"mlops-{uuid.uuid4().hex[:12]}"
    fs, _ = Storage().filesystem(f"{protocol}://{conn}{name}")
    fs.mkdir(name)
    return f"{protocol}://{conn}{name}"


def _gcs(request) -> str:
    request.getfixturevalue("gcs_server").activate()
    return _created("gs")


def _azure(request) -> str:
    request.getfixturevalue("azurite").activate()
    return _created("abfs", "azurite@")


@pytest.fixture(params=[_s3, _gcs, _azure], ids=["s3", "gcs", "azure"])
def bucket(request) -> str:
    """An empty bucket (container) of the store, as a URI; Azure's names the ``azurite`` connection."""
    return request.param(request)


def store(uri: str) -> Storage:
    """The storage the operators use for *uri* (S3 through ``aws_default``)."""
    return StorageHook(aws_conn_id="aws_default").storage_for(uri)


def frame(rows: int = 60, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {"x": [i / rows + shift for i in range(rows)], "label": [i % 2 for i in range(rows)]}
    )


def fingerprints(storage: Storage, prefix: str) -> dict[str, tuple]:
    return {e["uri"]: (e["size"], e["etag"]) for e in storage.list_entries(prefix)}


def test_ingest_validate_and_drift_with_the_data_root_on_the_store(airflow_db, bucket):
    from airflow.sdk import DAG

    storage = store(bucket)
    source = f"{bucket}/raw/events.csv"
    body = frame().to_csv(index=False).encode()
    storage.write_bytes(source, body)
    root = f"{bucket}/mlops"
    dag_id = f"mlops_store_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        ingest = IngestDatasetOperator(
            task_id="ingest", dataset_name="events", source=source, data_root=root,
            split={"train": 0.5, "holdout": 0.5}, label_column="label", aws_conn_id="aws_default",
        )  # fmt: skip
        ValidateDatasetOperator(
            task_id="validate",
            dataset_uri=ingest.output["uri"],
            expectations=[
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}},
                {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0}},
            ],
        )
        DriftCheckOperator(
            task_id="drift", dataset_uri=ingest.output["uri"], reference_uri=ingest.output["uri"],
        )  # fmt: skip
    serialize_dag(dag)

    run = dag.test()

    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert {task_id: str(ti.state) for task_id, ti in tis.items()} == {
        "ingest": "success", "validate": "success", "drift": "success",
    }  # fmt: skip
    result = tis["ingest"].xcom_pull(task_ids="ingest")
    assert result["uri"].startswith(f"{root}/datasets/events/")
    assert tis["validate"].xcom_pull(task_ids="validate")["success"] is True
    assert tis["drift"].xcom_pull(task_ids="drift")["drift"] is False
    # The snapshot is in the store (with its validation report) and reads back as the source.
    files = {uri.rsplit("/", 1)[-1] for uri in storage.list_uris(result["uri"])}
    assert {"_manifest.json", "data.parquet", "train.parquet", "holdout.parquet"} <= files
    pd.testing.assert_frame_equal(read_snapshot(result["uri"], storage=storage), pd.read_csv(io.BytesIO(body)))
    assert load_manifest(result["uri"], storage)["source"] == source

    # Ingesting the same source again returns the same snapshot and writes nothing.
    before = fingerprints(storage, root)
    again = IngestDatasetOperator(
        task_id="ingest", dataset_name="events", source=source, data_root=root,
        split={"train": 0.5, "holdout": 0.5}, label_column="label", aws_conn_id="aws_default",
    ).execute(context={})  # fmt: skip
    assert again["uri"] == result["uri"]
    assert fingerprints(storage, root) == before


def test_a_parquet_object_is_copied_within_its_store(bucket, tmp_path, monkeypatch):
    storage = store(bucket)
    local = tmp_path / "events.parquet"
    frame(500).to_parquet(local, index=False)
    source = f"{bucket}/raw/events.parquet"
    storage.upload_file(local, source)
    root = f"{bucket}/mlops"

    def through_the_worker(*args, **kwargs):
        raise AssertionError("the object's bytes went through the worker")

    # Fault injection: any download or upload of the object's bytes fails the ingest.
    monkeypatch.setattr(Storage, "download_file", through_the_worker)
    monkeypatch.setattr(Storage, "upload_file", through_the_worker)
    result = IngestDatasetOperator(
        task_id="ingest", dataset_name="events", source=source, data_root=root, aws_conn_id="aws_default"
    ).execute(context={})
    monkeypatch.undo()

    manifest = load_manifest(result["uri"], storage)
    copied = f"{result['uri']}/data.parquet"
    # The object itself, byte for byte: a copy in the store, fingerprinted from its head (no bytes read).
    assert storage.read_bytes(copied) == local.read_bytes()
    assert manifest["rows"] == 500
    assert manifest["sha256_of"] in ("s3-etag+size", "etag+size")
    pd.testing.assert_frame_equal(read_snapshot(result["uri"], storage=storage), frame(500))


def test_train_evaluate_and_deploy_from_snapshots_on_the_store(mlflow_server, bucket, tmp_path, request):
    """The trainer (a process without Airflow) reads and checkpoints on the store with what the runtime gives it."""
    from mlflow import MlflowClient

    from airflow_mlops.demo.data import make_demo_data
    from airflow_mlops.operators.deployment import DeployModelOperator
    from airflow_mlops.operators.evaluation import EvaluateModelOperator
    from airflow_mlops.operators.registry import RegisterModelOperator
    from airflow_mlops.operators.training import TrainModelOperator
    from airflow_mlops.serving import register_target_kind
    from tests.support.context import context_for
    from tests.support.deploy import EchoTarget, approve_version

    storage = store(bucket)
    storage.upload_file(make_demo_data(tmp_path / "demo.csv", rows=400), f"{bucket}/raw/demo.csv")
    name = f"store_{request.node.callspec.id}_{uuid.uuid4().hex[:6]}"

    def run(op):
        return op.execute(context_for(op, dag_id="store_loop", run_id="manual__store"))

    snapshot = run(
        IngestDatasetOperator(
            task_id="ingest", dataset_name=name, source=f"{bucket}/raw/demo.csv", data_root=f"{bucket}/mlops",
            split={"train": 0.7, "valid": 0.15, "holdout": 0.15}, label_column="label", aws_conn_id="aws_default",
        )
    )  # fmt: skip
    trained = run(
        TrainModelOperator(
            task_id="train", entrypoint="airflow_mlops.trainer.examples.sklearn_classifier",
            experiment_name=name, train_data=snapshot, valid_data=snapshot, output_root=f"{bucket}/runs",
            hyperparameters={"target": "label"}, aws_conn_id="aws_default",
        )
    )  # fmt: skip
    # The trainer kept its checkpoint on the store, under the task instance's folder.
    instance = f"{bucket}/runs/store_loop/manual__store/train"
    assert storage.list_uris(f"{instance}/checkpoints"), storage.list_uris(f"{bucket}/runs")
    version = run(RegisterModelOperator(task_id="register", model_name=name, model_uri=trained))
    evaluation = run(
        EvaluateModelOperator(
            task_id="evaluate", model_name=name, candidate_version=version, holdout_data=snapshot,
            target="label", thresholds={"accuracy_score": {"threshold": 0.5, "greater_is_better": True}},
            aws_conn_id="aws_default",
        )
    )  # fmt: skip
    assert evaluation["passed"] is True
    assert evaluation["metrics"]["accuracy_score"]["candidate"] > 0.5

    register_target_kind("echo", EchoTarget)
    approve_version(MlflowClient(mlflow_server.uri), name, version["version"])
    try:
        deployed = run(
            DeployModelOperator(
                task_id="deploy", model_name=name, version=version["version"], target={"kind": "echo"},
                sample_data=snapshot, drop_columns=["label"], aws_conn_id="aws_default",
            )
        )  # fmt: skip
    finally:
        served = EchoTarget.served.pop(name, None)
    assert deployed["version"] == str(version["version"])
    assert served is not None


CAPTURING = """
import json, sys
from airflow_mlops.serving.capture import CaptureWriter

writer = CaptureWriter(sys.argv[1], flush_seconds=0.2)
for i in range(30):
    body = json.dumps({"dataframe_records": [{"x": i / 30}]}).encode()
    writer.submit("churn", "3", f"r{i}", 200, body, json.dumps({"predictions": [i % 2]}).encode())
writer.close()
print(json.dumps(writer.stats()))
"""


@pytest.mark.parametrize("bucket", [_gcs, _azure], ids=["gcs", "azure"], indirect=True)
def test_captures_written_outside_airflow_are_read_by_the_worker(bucket):
    """The capture writer (the proxy's) runs without Airflow, with the variables the local target gives it."""
    import json
    import subprocess
    import sys
    from datetime import timedelta

    from airflow_mlops.hooks.storage import store_environment
    from airflow_mlops.serving.capture import read_captures
    from airflow_mlops.utils.clock import utc_now
    from airflow_mlops.utils.environment import base_environment

    start = utc_now() - timedelta(minutes=1)
    env = {**base_environment(), **store_environment([bucket])}
    assert not any(name.startswith("AIRFLOW_CONN_") for name in env)  # no Airflow connection reaches it
    done = subprocess.run(
        [sys.executable, "-c", CAPTURING, bucket], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["written_rows"] == 30

    rows = read_captures(bucket, "churn", start, utc_now() + timedelta(minutes=1), storage=store(bucket))
    assert sorted(rows["x"]) == [i / 30 for i in range(30)]
