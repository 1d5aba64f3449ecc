"""
Bytes a worker receives when ValidateDatasetOperator validates a PostgreSQL table in the database.

Starts a throwaway PostgreSQL server (``initdb`` + ``postgres`` from the PATH or ``/usr/lib/postgresql/*/bin``,
run as the ``postgres`` user when started as root) on loopback, fills a ``--rows`` x 20 column table with
``generate_series``, and puts a byte-counting TCP proxy on loopback between the worker and the server.
``ValidateDatasetOperator(sql_conn_id=..., table=...)`` then validates the table with a 10-expectation suite
(row count, not null, between, in set) in a fresh child process, through an Airflow ``postgres``
connection defined by ``AIRFLOW_CONN_<ID>`` that points at the proxy. Every byte the worker's database
connections receive and send crosses the proxy, so the counts are exact (TCP payload). For comparison the
same proxy counts a ``COPY ... TO STDOUT`` of the whole table (what loading the rows into the worker would
move at least). Needs ``apache-airflow-providers-postgres`` in the environment.

    python benchmarks/sql_pushdown.py [--rows 10000000] [--markdown docs/benchmarks-data.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTION = "## Validating a PostgreSQL table in the database (SQL push-down)"
# The same table shape and suite as the Parquet benchmark, so the two figures compare.
from validate_large_parquet import CAT_A, CAT_B, REGIONS, suite  # noqa: E402 - benchmarks/ is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.postgres import CountingProxy, Postgres, pg_bin  # noqa: E402


def load_table(pg: Postgres, rows: int) -> None:
    pg.psql("CREATE DATABASE bench")
    floats = ",\n".join(f"(random() * {i})::float8 AS f{i:02d}" for i in range(3, 12))
    sql = f"""
    CREATE UNLOGGED TABLE big AS
    SELECT g::bigint AS id,
           random()::float8 AS f00,
           random()::float8 AS f01,
           (random() * 20 - 10)::float8 AS f02,
           {floats},
           floor(random() * 1000)::bigint AS i00,
           floor(random() * 1e12)::bigint AS i01,
           floor(random() * 200 - 100)::bigint AS i02,
           (ARRAY{CAT_A!r})[1 + floor(random() * {len(CAT_A)})::int] AS cat_a,
           (ARRAY{CAT_B!r})[1 + floor(random() * {len(CAT_B)})::int] AS cat_b,
           (ARRAY{REGIONS!r})[1 + floor(random() * {len(REGIONS)})::int] AS region,
           'sku-' || lpad(floor(random() * 200000)::text, 6, '0') AS sku
    FROM generate_series(1, {rows}) AS g;
    ANALYZE big;
    """
    pg.psql(sql, database="bench")


WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
def mem(key):  # this process's own peak (ru_maxrss would include the parent's peak at fork time)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))
from airflow_mlops.operators.validation import ValidateDatasetOperator
import great_expectations, sqlalchemy  # imported lazily by the operator
op = ValidateDatasetOperator(task_id="validate", sql_conn_id=spec["conn_id"], table="big",
                             expectations=spec["suite"], aws_conn_id=None)
start = time.perf_counter()
result = op.execute(context={})
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "maxrss_kib": mem("VmHWM"),
                  "success": result["success"], "evaluated": result["evaluated"],
                  "failed": result["failed"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--markdown", help="append the results as a section to this Markdown page")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    os.chmod(work, 0o755)
    pg = Postgres(work)
    results: dict = {"rows": args.rows}
    try:
        pg.start()
        start = time.perf_counter()
        load_table(pg, args.rows)
        results["load_seconds"] = round(time.perf_counter() - start, 1)
        results["table_rows"] = int(pg.psql("SELECT count(*) FROM big", database="bench"))
        results["relation_bytes"] = int(pg.psql("SELECT pg_total_relation_size('big')", database="bench"))
        results["columns"] = int(pg.psql(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'big'", database="bench"
        ))  # fmt: skip

        proxy = CountingProxy(pg.port)
        env = dict(
            os.environ, GX_ANALYTICS_ENABLED="false", AIRFLOW_HOME=str(work / "airflow"),
            MLOPS_DATA_ROOT=str(work / "data"),
            AIRFLOW_CONN_PG_BENCH=json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": proxy.port,
                                              "login": "postgres", "schema": "bench"}),
        )  # fmt: skip
        spec = {"conn_id": "pg_bench", "suite": suite(args.rows)}
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, json.dumps(spec)], env=env, capture_output=True, text=True, check=False
        )  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"validation failed:\n{proc.stderr[-4000:]}")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        run.update(received_bytes=proxy.to_client, sent_bytes=proxy.to_server, connections=proxy.connections)
        results["validate"] = run

        proxy.reset()
        start = time.perf_counter()
        subprocess.run(
            [*pg.as_user, shutil.which("psql") or pg_bin("psql"), "-h", "127.0.0.1", "-p", str(proxy.port),
             "-U", "postgres", "-d", "bench", "-qAt", "-c", "COPY big TO STDOUT"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True,
        )  # fmt: skip
        results["copy_out"] = {
            "received_bytes": proxy.to_client,
            "seconds": round(time.perf_counter() - start, 1),
        }
        proxy.close()
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.markdown:
        path = Path(args.markdown)
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + markdown(results))


def _mib(value: int) -> str:
    return f"{value / (1 << 20):,.1f} MiB"


def markdown(results: dict) -> str:
    run = results["validate"]
    copy = results["copy_out"]
    return "\n".join([
        SECTION,
        "",
        "Command: `python benchmarks/sql_pushdown.py --markdown docs/benchmarks-data.md` (a throwaway",
        "PostgreSQL on loopback; bytes are TCP payload counted by a proxy between the worker and the server).",
        "",
        f"Table: {results['table_rows']:,} rows x {results['columns']} columns, "
        f"`pg_total_relation_size` {_mib(results['relation_bytes'])} ({results['relation_bytes']:,} B). "
        f"Suite: {run['evaluated']} expectations (row count, not null, between, in set).",
        "",
        "| what | received by the worker | sent by the worker | seconds | worker peak RSS |",
        "|---|---|---|---|---|",
        f"| `ValidateDatasetOperator(sql_conn_id=..., table=...)` ({'passed' if run['success'] else 'failed'}, "
        f"{run['connections']} connection(s)) | {run['received_bytes']:,} B | {run['sent_bytes']:,} B | "
        f"{run['seconds']:.1f} | {run['maxrss_kib'] / (1 << 20):.2f} GiB |",
        f"| for comparison: `COPY big TO STDOUT` (the rows as text) | {copy['received_bytes']:,} B | | "
        f"{copy['seconds']} | |",
        "",
        f"The worker received {run['received_bytes'] / results['relation_bytes']:.6%} of the table's size: only",
        "metric results (counts, a few example values) come back; the rows stay in the database. Timings are",
        "from a shared 2-core machine and only indicative; the byte counts are exact.",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
