"""
Drift of two Parquet tables computed by a local Spark (``compute_drift_spark``) vs loaded into the worker.

Writes a reference and a current table of ``--rows`` x 20 columns as Parquet with Spark (12 continuous, 4 small
integers, 4 categories; two features shifted in the current table, the shape of ``drift_pushdown.py``), then,
each in a fresh child process:

- Spark: ``compute_drift_spark`` on the two Parquet paths, Spark ``local[--cores]`` started in that process;
- in memory (up to ``--memory-rows``): ``pandas.read_parquet`` of both tables and ``compute_drift``;

and reports seconds (the Spark session's start excluded, reported apart), the worker's (Python's) peak memory,
the Spark driver JVM's peak memory, rows collected to the worker and whether the verdicts agree.

    python benchmarks/spark_drift.py [--rows 1000000] [--cores 2] [--memory-rows 2000000] [--markdown docs/scale.md]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import drift_section  # noqa: E402

SECTION = "## Drift of Parquet tables: Spark local vs in the worker"

WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
def mem(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
import numpy, pandas, scipy.stats  # noqa: F401 - imported by both paths, not timed
from airflow_mlops.data.drift import compute_drift
if spec["mode"] == "spark":
    from pyspark.sql import SparkSession
    from airflow_mlops.data.spark_drift import SparkData, compute_drift_spark
    started = time.perf_counter()
    spark = (SparkSession.builder.master(f"local[{spec['cores']}]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", spec["driver_memory"]).config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", str(spec["cores"])).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    session_seconds = round(time.perf_counter() - started, 2)
    transfer = {}
    start = time.perf_counter()
    report = compute_drift_spark(spark, SparkData(path=spec["reference"]), SparkData(path=spec["current"]),
                                 transfer=transfer)
    seconds = round(time.perf_counter() - start, 2)
    jvm = mem(spark.sparkContext._gateway.proc.pid)
    out = {"session_seconds": session_seconds, "jvm_peak_kib": jvm, "summary_rows": transfer["summary_rows"]}
else:
    start = time.perf_counter()
    report = compute_drift(pandas.read_parquet(spec["reference"]), pandas.read_parquet(spec["current"]))
    seconds = round(time.perf_counter() - start, 2)
    out = {}
print(json.dumps({"seconds": seconds, "peak_rss_kib": mem(), "drifted": report["drifted_features"], **out}))
"""

WRITER = r"""
import json, sys
spec = json.loads(sys.argv[1])
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master(f"local[{spec['cores']}]").config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
for name, shift, seed in (("reference", 0.0, 1), ("current", 0.3, 2)):
    columns = [(F.rand(seed * 100 + i) * (i + 1) + (shift if i < 2 else 0)).alias(f"f{i:02d}") for i in range(12)]
    columns += [F.floor(F.rand(seed * 100 + 20 + i) * (5 + 5 * i)).cast("bigint").alias(f"i{i:02d}") for i in range(4)]
    columns += [F.element_at(F.array(*[F.lit(c) for c in "abcde"]),
                             (F.floor(F.rand(seed * 100 + 40 + i) * 5) + 1).cast("int")).alias(f"c{i:02d}")
                for i in range(4)]
    spark.range(spec["rows"]).select(*columns).write.mode("overwrite").parquet(f"{spec['root']}/{name}")
spark.stop()
"""


def child(code: str, spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, check=False, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"{spec.get('mode', 'writer')} failed:\n{proc.stderr[-4000:]}")
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--driver-memory", default="1g")
    parser.add_argument(
        "--memory-rows", type=int, default=2_000_000, help="largest table loaded into the worker"
    )
    parser.add_argument("--markdown", help="append the results as a section to this Markdown page")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="spark-drift-") as root:
        start = time.perf_counter()
        child(WRITER, {"rows": args.rows, "root": root, "cores": args.cores})
        results: dict = {
            "rows": args.rows, "columns": 20, "cores": args.cores, "driver_memory": args.driver_memory,
            "write_seconds": round(time.perf_counter() - start, 1),
            "parquet_bytes": sum(p.stat().st_size for p in Path(root).rglob("*.parquet")),
        }  # fmt: skip
        spec = {
            "reference": f"{root}/reference", "current": f"{root}/current", "cores": args.cores,
            "driver_memory": args.driver_memory,
        }  # fmt: skip
        results["spark"] = child(WORKER, {**spec, "mode": "spark"})
        if args.rows <= args.memory_rows:
            results["in_memory"] = child(WORKER, {**spec, "mode": "memory"})
            results["same_verdict"] = results["in_memory"]["drifted"] == results["spark"]["drifted"]
    print(json.dumps(results, indent=2))
    if args.markdown:
        path = Path(args.markdown)
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + markdown(results))


def markdown(results: dict) -> str:
    def gib(kib: int) -> str:
        return f"{kib / (1 << 20):.2f} GiB"

    spark = results["spark"]
    rows = [
        "| path | seconds | rows to the worker | worker (Python) peak memory | Spark driver JVM peak | drifted features |",
        "|---|---|---|---|---|---|",
        f"| Spark `local[{results['cores']}]` (`compute_drift_spark`) | {spark['seconds']} (+{spark['session_seconds']} "
        f"session start) | 0 ({spark['summary_rows']} summary rows) | {gib(spark['peak_rss_kib'])} | "
        f"{gib(spark['jvm_peak_kib'])} | {', '.join(spark['drifted']) or 'none'} |",
    ]
    if "in_memory" in results:
        memory = results["in_memory"]
        rows.append(
            f"| in the worker (`compute_drift` on two frames) | {memory['seconds']} | {results['rows'] * 2:,} | "
            f"{gib(memory['peak_rss_kib'])} | - | {', '.join(memory['drifted']) or 'none'} |"
        )
    return drift_section(
        f"{SECTION} ({results['rows']:,} rows x {results['columns']} columns each)",
        f"`python benchmarks/spark_drift.py --rows {results['rows']} --cores {results['cores']}`: two Parquet "
        f"tables of {results['parquet_bytes'] / (1 << 20):,.1f} MiB in all, written by Spark; driver memory "
        f"{results['driver_memory']}; one run each, in a fresh process.",
        rows,
        results.get("same_verdict"),
    )

if __name__ == "__main__":
    main()
