"""
Worker memory, time and bytes moved when ``MonitorModelOperator`` monitors served rows logged in PostgreSQL
(``sql_conn_id``): the logged table and the reference table have ``--rows`` rows x 20 features each.

Starts a throwaway PostgreSQL server on loopback (``tests/support/postgres.py``) and fills a reference and a
current table as ``benchmarks/drift_pushdown.py`` does (two features shifted); registers a small champion in an
MLflow store on SQLite; then, in a fresh child process connected through a byte-counting proxy, runs the
operator over ``SELECT *, <prediction>, <label> FROM current`` against ``reference_table="reference"``: feature
drift, the default data-quality suite and the live accuracy, all computed by the database.

    python benchmarks/drift_monitoring.py [--rows 10000000] [--markdown docs/scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.drift_pushdown import load_tables  # noqa: E402
from tests.support.postgres import CountingProxy, Postgres  # noqa: E402

SECTION = "## Monitoring served rows logged in PostgreSQL"
MODEL = "bench_monitored"
QUERY = "SELECT *, (f00 > 0.5)::int AS prediction, (f01 > 1.0)::int AS label FROM current"


def register_champion(tracking_uri: str, artifacts: Path) -> None:
    """A small classifier registered as the champion (monitoring in SQL never loads it without a holdout)."""
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("bench-training", artifact_location=artifacts.as_uri())
    rng = np.random.default_rng(0)
    features = rng.random((200, 2))
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(features, features[:, 0] > 0.5),
            name="model",
            registered_model_name=MODEL,
        )
    client.set_registered_model_alias(MODEL, "champion", str(info.registered_model_version))


WORKER = r"""
import json, sys, time
from types import SimpleNamespace
def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
from airflow_mlops.operators.monitoring import MonitorModelOperator
import mlflow, sqlalchemy, great_expectations, scipy.stats  # noqa: F401 - imported by the task, not timed
op = MonitorModelOperator(task_id="monitor", model_name=sys.argv[1], sql_conn_id="bench_db", query=sys.argv[2],
                          reference_table="reference", min_records=100, aws_conn_id=None)
ti = SimpleNamespace(dag_id="bench", run_id="manual__1", task_id="monitor", try_number=1, map_index=-1,
                     xcom_push=lambda key, value: None)
start = time.perf_counter()
result = op.execute({"ti": ti, "task_instance": ti, "run_id": "manual__1"})
print(json.dumps({"seconds": round(time.perf_counter() - start, 1), "peak_rss_kib": peak_kib(),
                  "verdict": result["verdict"], "records": result["records"],
                  "drifted": result["feature_drift"]["drifted_features"],
                  "quality": result["data_quality"]["success"], "accuracy": result["performance"]["value"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--markdown", help="replace (or add) this benchmark's section of this Markdown page")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mlops-monitoring-bench-"))
    pg = Postgres()
    results: dict = {"rows": args.rows}
    try:
        pg.start()
        start = time.perf_counter()
        load_tables(pg, args.rows)
        results["load_seconds"] = round(time.perf_counter() - start, 1)
        tracking = f"sqlite:///{workdir / 'mlflow.db'}"
        register_champion(tracking, workdir / "artifacts")
        proxy = CountingProxy(pg.port)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{workdir / 'airflow.db'}",
            "MLOPS_DATA_ROOT": str(workdir / "data"),
            "MLFLOW_TRACKING_URI": tracking,
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": tracking}),
            "AIRFLOW_CONN_BENCH_DB": json.dumps(
                {"conn_type": "postgres", "host": "127.0.0.1", "port": proxy.port, "login": "postgres",
                 "schema": "bench"}
            ),
        }  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, MODEL, QUERY], capture_output=True, text=True, check=False, env=env
        )
        if proc.returncode != 0:
            sys.exit(f"monitoring failed:\n{proc.stderr[-4000:]}")
        results["monitor"] = json.loads(proc.stdout.strip().splitlines()[-1])
        results["monitor"]["received_bytes"] = proxy.to_client
        proxy.close()
    finally:
        pg.stop()
    print(json.dumps(results, indent=2))
    if args.markdown:
        path = Path(args.markdown)
        text = path.read_text() if path.exists() else ""
        head, _, rest = text.partition(SECTION)
        tail = rest[rest.find("\n## ") :] if "\n## " in rest else ""
        path.write_text(head.rstrip("\n") + "\n\n" + markdown(results) + tail)


def markdown(results: dict) -> str:
    r = results["monitor"]
    return "\n".join(
        [
            f"{SECTION} ({results['rows']:,} rows x 20 features, and as many reference rows)",
            "",
            f"`python benchmarks/drift_monitoring.py --rows {results['rows']}`: `MonitorModelOperator(sql_conn_id=...,"
            " query=..., reference_table=...)` on PostgreSQL over loopback; one run.",
            "",
            "| rows | seconds | bytes to the worker | worker peak memory | verdict | drifted features | data quality |"
            " live accuracy |",
            "|---|---|---|---|---|---|---|---|",
            f"| {r['records']:,} | {r['seconds']} | {r['received_bytes'] / (1 << 20):,.1f} MiB |"
            f" {r['peak_rss_kib'] / (1 << 20):.2f} GiB | {r['verdict']} | {', '.join(r['drifted']) or 'none'} |"
            f" {'passed' if r['quality'] else 'failed'} | {r['accuracy']} |",
            "",
            "The seconds are the database's (one sorted pass per numeric column of both tables), on a shared 2-core",
            "machine; the worker's memory and the bytes it receives do not grow with the rows (0.5 MiB at 200,000 "
            "rows too).",
            "",
        ]
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
