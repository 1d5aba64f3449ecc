"""
Peak memory of monitoring a large window: ``MonitorModelOperator`` over captured rows x 20 features.

The captures (10 Parquet files in the capture layout, with request ids, timestamps and predictions), ground-truth
labels for a share of the requests, and the champion (a scikit-learn classifier registered in a real ``mlflow
server``, with its training snapshot and evaluation holdout) are made first; then a fresh interpreter runs the
operator's ``execute`` (feature drift, prediction drift, the data-quality suite, live accuracy joined on the
request id, the MLflow run with its plots) and reports its peak RSS (``ru_maxrss``, which includes the
interpreter, Airflow, MLflow and Great Expectations themselves). With ``--repeat`` the same data is monitored
that many times, each in a fresh interpreter, and the median (range) is reported. The target: at most 1.5 GiB
at 10,000,000 rows.

    python benchmarks/monitor_memory.py [--rows 10000000] [--features 20] [--labelled 0.1] [--repeat 1]
        [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import bin_path, free_port, stop_process, wait_for_http  # noqa: E402 - isolated AIRFLOW_HOME

MODEL = "bench_monitored"
TARGET_BYTES = int(1.5 * 1024**3)

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from datetime import datetime, timedelta, UTC
    from airflow_mlops.operators.monitoring import MonitorModelOperator
    from tests.support.context import context_for

    root, model, labels = sys.argv[1], sys.argv[2], sys.argv[3] or None
    op = MonitorModelOperator(task_id="monitor", model_name=model, capture_uri=root, aws_conn_id=None,
                              window=timedelta(hours=2), min_records=1000, labels_uri=labels)
    started = time.perf_counter()
    result = op.execute(context_for(op))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak": peak, "seconds": seconds, "records": result["records"],
                      "verdict": result["verdict"], "reasons": result["reasons"],
                      "labelled": (result["performance"] or {}).get("labelled"),
                      "accuracy": (result["performance"] or {}).get("value")}))
    """
)


def make_data(root: Path, tracking_uri: str, rows: int, features: int, labelled: float) -> str:
    """The champion, its snapshot, the captures and the labels; returns the labels' path ("" without labels)."""
    import mlflow
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops.serving import capture as C

    names = [f"f{i:02d}" for i in range(features)]
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.normal(size=(100_000, features)), columns=names)
    reference["label"] = (reference["f00"] + reference["f01"] > 0).astype(int)
    snapshot = root / "datasets" / MODEL / ("b" * 64)
    snapshot.mkdir(parents=True)
    reference.to_parquet(snapshot / "data.parquet", index=False)
    reference.tail(20_000).to_parquet(snapshot / "holdout.parquet", index=False)
    (snapshot / "_manifest.json").write_text(
        json.dumps({"name": MODEL, "files": {"data": "data.parquet", "holdout": "holdout.parquet"}})
    )
    model = LogisticRegression().fit(reference[names], reference["label"])
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-training")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL, pip_requirements=["scikit-learn"]
        )
    client = MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    summary = {"holdout": f"{snapshot}#holdout", "metrics": {"accuracy_score": {"candidate": 0.99}}}
    client.set_model_version_tag(MODEL, version, "mlops.data.uri", str(snapshot))
    client.set_model_version_tag(MODEL, version, "mlops.evaluation.summary", json.dumps(summary))
    client.set_registered_model_alias(MODEL, "champion", version)

    now = pd.Timestamp.now(tz="UTC")
    per_file = rows // 10
    step = max(1, round(1 / labelled)) if labelled > 0 else 0
    labels = []
    for part in range(10):
        values = rng.normal(size=(per_file, features))
        values[:, 2] += 0.5  # a shift the monitor should flag
        table = {name: values[:, i] for i, name in enumerate(names)}
        start = part * per_file
        table.update(
            {
                C.REQUEST_ID: [f"req-{start + i:08d}" for i in range(per_file)],
                C.ROW: np.zeros(per_file, dtype="int64"),
                C.TIMESTAMP: pd.date_range(now - pd.Timedelta(minutes=50), now, periods=per_file),
                C.MODEL: [MODEL] * per_file,
                C.VERSION: [version] * per_file,
                C.STATUS: np.full(per_file, 200, dtype="int64"),
                C.PREDICTION: (values[:, 0] + values[:, 1] > 0).astype(float),
            }
        )
        hour = C.hour_of(now.to_pydatetime())
        folder = root / "captures" / f"model={MODEL}" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table), folder / f"part-bench-{part:02d}.parquet", compression="zstd")
        if step:  # ground truth arrives for one request in every `step`: the rule the model learnt
            picked = np.arange(0, per_file, step)
            labels.append(
                pa.table(
                    {
                        C.REQUEST_ID: [f"req-{start + i:08d}" for i in picked],
                        "label": (values[picked, 0] + values[picked, 1] > 0).astype("int64"),
                    }
                )
            )
        del table, values
    if not labels:
        return ""
    pq.write_table(pa.concat_tables(labels), root / "labels.parquet")
    return str(root / "labels.parquet")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument(
        "--labelled", type=float, default=0.1, help="share of requests with a label (0: none)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="monitor the same data this many times")
    parser.add_argument("--markdown", help="append the result to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp:
        folder = Path(tmp)
        (folder / "mlflow").mkdir()
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        log = open(folder / "mlflow" / "server.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [bin_path("mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "mlflow" / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_http(f"{uri}/health", timeout=900, proc=proc)
            started = time.perf_counter()
            labels = make_data(folder / "data", uri, args.rows, args.features, args.labelled)
            print(f"data made in {time.perf_counter() - started:.0f}s", flush=True)
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": uri}),
                "MLFLOW_TRACKING_URI": uri,
            }
            child = folder / "monitor_child.py"  # a file: pyspark's import exits a `python -c` main module
            child.write_text(_CHILD)
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, "-W", "ignore", str(child), str(folder / "data"), MODEL, labels],
                    capture_output=True, text=True, cwd=REPO, env=env,
                )  # fmt: skip
                if out.returncode != 0:
                    sys.stderr.write(out.stderr[-4000:])
                    return out.returncode
                lines = [line for line in out.stdout.splitlines() if line.startswith('{"peak"')]
                if not lines:
                    sys.stderr.write(
                        f"rc={out.returncode}\n" + out.stdout[-4000:] + "\n----\n" + out.stderr[-1000:]
                    )
                    return 1
                runs.append(json.loads(lines[-1]))
                print(json.dumps(runs[-1]), flush=True)
        finally:
            stop_process(proc)
            log.close()
    result = runs[0]
    peaks = sorted(run["peak"] / 1024**3 for run in runs)
    seconds = sorted(run["seconds"] for run in runs)
    gib = statistics.median(peaks)
    spread = f" ({peaks[0]:.2f}-{peaks[-1]:.2f} GiB, median of {len(runs)} runs)" if len(runs) > 1 else ""
    took = f"{statistics.median(seconds):.0f} s" + (
        f" ({seconds[0]:.0f}-{seconds[-1]:.0f} s)" if len(runs) > 1 else ""
    )
    live = (
        f", live accuracy {result['accuracy']} over {result['labelled']:,} labelled requests"
        if result.get("labelled")
        else ""
    )
    command = f"python benchmarks/monitor_memory.py --rows {args.rows} --features {args.features} --labelled {args.labelled}"
    command += f" --repeat {args.repeat}" if args.repeat > 1 else ""
    text = (
        f"\n`{command}`: `MonitorModelOperator` over {result['records']:,} captured rows x {args.features} "
        f"features (feature and prediction drift, the data-quality suite{', live accuracy' if live else ''}, the "
        f"MLflow run and plots) peaked at **{gib:.2f} GiB**{spread} RSS in a fresh process (interpreter, Airflow, "
        f"MLflow and GX included), {'within' if gib * 1024**3 <= TARGET_BYTES else 'OVER'} the 1.5 GiB target; "
        f"it took {took}; verdict {result['verdict']} ({'; '.join(result['reasons'])[:200]}){live}.\n"
    )
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0 if gib * 1024**3 <= TARGET_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
