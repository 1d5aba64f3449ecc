"""
Drift of two PostgreSQL tables computed in the database (``compute_drift_sql``) vs loaded into the worker.

Starts a throwaway PostgreSQL server on loopback (see ``tests/support/postgres.py``), fills a reference and a
current table of ``--rows`` x 20 columns (12 continuous, 4 small integers, 4 categories; two features shifted in
the current table), then, each in a fresh child process through a byte-counting proxy:

- push-down: ``compute_drift_sql`` on the two tables;
- in memory (up to ``--memory-rows``): ``pandas.read_sql`` of both tables and ``compute_drift``;

and reports seconds, bytes received by the worker, the worker's peak memory and whether the verdicts agree.

    python benchmarks/drift_pushdown.py [--rows 10000000] [--memory-rows 2000000] [--markdown docs/scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import drift_section  # noqa: E402
from tests.support.postgres import CountingProxy, Postgres  # noqa: E402

SECTION = "## Drift of PostgreSQL tables: in the database vs in the worker"
CATEGORIES = ["'a'", "'b'", "'c'", "'d'", "'e'"]


def load_tables(pg: Postgres, rows: int) -> None:
    pg.psql("CREATE DATABASE bench")
    for name, shift in (("reference", 0.0), ("current", 0.3)):
        floats = ",\n".join(
            f"(random() * {i + 1} + {shift if i < 2 else 0})::float8 AS f{i:02d}" for i in range(12)
        )
        ints = ",\n".join(f"floor(random() * {5 + 5 * i})::bigint AS i{i:02d}" for i in range(4))
        cats = ",\n".join(
            f"(ARRAY[{', '.join(CATEGORIES)}])[1 + floor(random() * {len(CATEGORIES)})::int] AS c{i:02d}"
            for i in range(4)
        )
        pg.psql(
            f"CREATE UNLOGGED TABLE {name} AS SELECT {floats},\n{ints},\n{cats} "
            f"FROM generate_series(1, {rows}) AS g; ANALYZE {name};",
            database="bench",
        )


WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
def mem(key):  # this process's own peak
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))
import sqlalchemy as sa
import numpy, pandas, scipy.stats  # noqa: F401 - imported by both paths, not timed
from airflow_mlops.data.drift import compute_drift
from airflow_mlops.data.sql_drift import SqlData, compute_drift_sql
engine = sa.create_engine(spec["url"], poolclass=sa.pool.NullPool)
start = time.perf_counter()
if spec["mode"] == "pushdown":
    report = compute_drift_sql(engine, SqlData(table="reference"), SqlData(table="current"))
else:
    reference = pandas.read_sql("SELECT * FROM reference", engine)
    current = pandas.read_sql("SELECT * FROM current", engine)
    report = compute_drift(reference, current)
print(json.dumps({"seconds": round(time.perf_counter() - start, 2), "peak_rss_kib": mem("VmHWM"),
                  "drifted": report["drifted_features"]}))
"""


def run(mode: str, url: str, proxy: CountingProxy) -> dict:
    proxy.reset()
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps({"mode": mode, "url": url})],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"{mode} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["received_bytes"] = proxy.to_client
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument(
        "--memory-rows", type=int, default=2_000_000, help="largest table loaded into the worker"
    )
    parser.add_argument("--markdown", help="append the results as a section to this Markdown page")
    args = parser.parse_args()

    pg = Postgres()
    results: dict = {"rows": args.rows, "columns": 20}
    try:
        pg.start()
        start = time.perf_counter()
        load_tables(pg, args.rows)
        results["load_seconds"] = round(time.perf_counter() - start, 1)
        results["table_bytes"] = int(
            pg.psql("SELECT pg_total_relation_size('reference') + pg_total_relation_size('current')", "bench")
        )
        proxy = CountingProxy(pg.port)
        url = pg.url("bench", port=proxy.port)
        results["pushdown"] = run("pushdown", url, proxy)
        if args.rows <= args.memory_rows:
            results["in_memory"] = run("memory", url, proxy)
            results["same_verdict"] = results["in_memory"]["drifted"] == results["pushdown"]["drifted"]
        proxy.close()
    finally:
        pg.stop()
    print(json.dumps(results, indent=2))
    if args.markdown:
        path = Path(args.markdown)
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + markdown(results))


def markdown(results: dict) -> str:
    def mib(value: int) -> str:
        return f"{value / (1 << 20):,.1f} MiB"

    rows = [
        "| path | seconds | bytes to the worker | worker peak memory | drifted features |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("pushdown", "in the database (`compute_drift_sql`)"), ("in_memory", "in the worker")):
        if key in results:
            r = results[key]
            rows.append(
                f"| {label} | {r['seconds']} | {mib(r['received_bytes'])} | {mib(r['peak_rss_kib'] * 1024)} | "
                f"{', '.join(r['drifted']) or 'none'} |"
            )
    return drift_section(
        f"{SECTION} ({results['rows']:,} rows x {results['columns']} columns each)",
        f"`python benchmarks/drift_pushdown.py --rows {results['rows']}`, PostgreSQL on loopback; two tables of "
        f"{mib(results['table_bytes'])} in all (load {results['load_seconds']} s).",
        rows,
        results.get("same_verdict"),
    )

if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
