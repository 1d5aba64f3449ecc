"""
Peak memory and throughput of validating a large Parquet snapshot with a Great Expectations suite.

Writes a ``--rows`` x 20 column Parquet file (16 numeric, 4 string columns; row groups of 1M rows written
with pyarrow, so generation stays small), wraps it in a snapshot (``data.parquet`` + ``_manifest.json``)
and validates it with a 10-expectation suite (row count, not null, between, in set), ``--repeat`` times side
by side, each in a fresh child process:

- ``arrow``: what the snapshot path of ``ValidateDatasetOperator`` runs with the Arrow engine
  (``airflow_mlops.data.parquet_validation.validate_snapshot``): build the suite, validate the snapshot
  batch by batch, summarise, render and write the Data Docs page;
- ``frame``: ``ValidateDatasetOperator.execute`` as it is (with the Arrow engine since it validates a snapshot
  through it; before, the suite's columns were read into one DataFrame and validated by GX's pandas engine);
- optionally ``GXValidateDataFrameOperator`` from the Great Expectations Airflow provider, in a child of
  ``--gx-python`` (an interpreter of a separate environment with ``airflow-provider-great-expectations``,
  ``pandas`` and ``pyarrow``; the provider pins an Airflow version of its own). Its ``configure_dataframe``
  reads the same Parquet file with pandas.

Each child reports its own wall time (reading + validating; interpreter and imports excluded) and ``VmHWM``;
the parent also samples the child's RSS and stops it above ``--kill-gib``. Medians and ranges over the runs.

    python benchmarks/validate_large_parquet.py [--rows 10000000] [--repeat 3] [--workdir DIR]
        [--gx-python OTHER_VENV/bin/python] [--markdown docs/scale.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW_GROUP = 1_000_000
CAT_A = ["a", "b", "c", "d", "e"]
CAT_B = [f"b{i:02d}" for i in range(20)]
REGIONS = ["eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south"]
SECTION = "## Validating a Parquet snapshot in the worker"


def suite(rows: int) -> list[dict]:
    return [
        {"type": "expect_table_row_count_to_equal", "kwargs": {"value": rows}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "f00"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "cat_a"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f01", "min_value": 0, "max_value": 1}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f02", "min_value": -10, "max_value": 10}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "i00", "min_value": 0, "max_value": 999}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "cat_a", "value_set": CAT_A}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "cat_b", "value_set": CAT_B}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "region", "value_set": REGIONS}},
    ]  # fmt: skip


def generate(path: Path, rows: int) -> None:
    """Write *rows* rows x 20 columns, one row group at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    try:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            columns = {"id": pa.array(np.arange(start, start + n, dtype="int64"))}
            columns["f00"] = pa.array(rng.standard_normal(n))
            columns["f01"] = pa.array(rng.random(n))
            columns["f02"] = pa.array(np.clip(rng.standard_normal(n) * 2, -10, 10))
            for i in range(3, 12):
                columns[f"f{i:02d}"] = pa.array(rng.standard_normal(n) * i)
            columns["i00"] = pa.array(rng.integers(0, 1000, n, dtype="int64"))
            columns["i01"] = pa.array(rng.integers(0, 1 << 40, n, dtype="int64"))
            columns["i02"] = pa.array(rng.integers(-100, 100, n, dtype="int64"))
            columns["cat_a"] = pa.array(np.array(CAT_A, dtype=object)[rng.integers(0, len(CAT_A), n)])
            columns["cat_b"] = pa.array(np.array(CAT_B, dtype=object)[rng.integers(0, len(CAT_B), n)])
            columns["region"] = pa.array(np.array(REGIONS, dtype=object)[rng.integers(0, len(REGIONS), n)])
            columns["sku"] = pa.array([f"sku-{v:06d}" for v in rng.integers(0, 200_000, n)])
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            writer.write_table(table, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()


def make_snapshot(workdir: Path, rows: int) -> tuple[str, Path, dict]:
    import pyarrow.parquet as pq

    source = workdir / "big.parquet"
    if not source.exists() or pq.ParquetFile(source).metadata.num_rows != rows:
        print(f"generating {rows:,} rows into {source}", file=sys.stderr)
        generate(source, rows)
    meta = pq.ParquetFile(source)
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    snap = workdir / "root" / "datasets" / "big" / sha[:16]
    shutil.rmtree(snap, ignore_errors=True)
    snap.mkdir(parents=True)
    os.link(source, snap / "data.parquet")
    schema = {field.name: str(field.type) for field in meta.schema_arrow}
    manifest = {
        "name": "big", "snapshot_id": sha[:16], "uri": str(snap), "source": str(source), "format": "parquet",
        "rows": meta.metadata.num_rows, "schema": schema, "bytes": source.stat().st_size, "sha256": sha,
        "split": None, "files": {"data": "data.parquet"}, "created_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    (snap / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    info = {"rows": meta.metadata.num_rows, "columns": len(schema), "row_groups": meta.num_row_groups,
            "file_bytes": source.stat().st_size}  # fmt: skip
    return str(snap), source, info


# Child programs: print one JSON line {"seconds", "maxrss_kib", "success", ...} on stdout.
OURS = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
def mem(key):  # this process's own figures (ru_maxrss would include the parent's peak at fork time)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))
from airflow_mlops.operators.validation import ValidateDatasetOperator
import great_expectations, pandas  # imported lazily by the operator; the provider imports them at module level
base = mem("VmRSS")
op = ValidateDatasetOperator(task_id="validate", dataset_uri=spec["uri"], expectations=spec["suite"],
                             aws_conn_id=None, result_format="SUMMARY")
start = time.perf_counter()
result = op.execute(context={})
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "maxrss_kib": mem("VmHWM"),
                  "import_maxrss_kib": base, "success": result["success"], "evaluated": result["evaluated"],
                  "rows": result["rows"]}))
"""

ARROW = r"""
import json, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
def mem(key):  # this process's own figures (ru_maxrss would include the parent's peak at fork time)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))
from airflow_mlops.data.expectations import build_suite, render_data_docs, summarize
from airflow_mlops.data.parquet_validation import validate_snapshot
import great_expectations, pandas, pyarrow.parquet  # imported lazily by the operator
base = mem("VmRSS")
start = time.perf_counter()
suite = build_suite(spec["suite"], "expectations", "big-suite")
result, rows = validate_snapshot(spec["uri"], suite, "big", "SUMMARY")
summary = summarize(result)
docs = Path(spec["uri"]) / "_validation" / "big-suite-arrow" / "index.html"
docs.parent.mkdir(parents=True, exist_ok=True)
docs.write_text(render_data_docs(result))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "maxrss_kib": mem("VmHWM"), "import_maxrss_kib": base,
                  "success": summary["success"], "evaluated": summary["evaluated"], "rows": rows}))
"""

THEIRS = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
def mem(key):  # this process's own figures (ru_maxrss would include the parent's peak at fork time)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))
import pandas as pd
import great_expectations as gx
from great_expectations_provider.operators.validate_dataframe import GXValidateDataFrameOperator
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

class TI:
    def xcom_push(self, key, value):
        self.value = value

def configure_expectations(context):
    return gx.ExpectationSuite(name="big-suite", expectations=[
        ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"]).to_domain_obj() for e in spec["suite"]])

base = mem("VmRSS")
start = time.perf_counter()
# The provider calls configure_dataframe in __init__ (when the DAG file is parsed, in a real deployment).
op = GXValidateDataFrameOperator(task_id="validate", configure_dataframe=lambda: pd.read_parquet(spec["path"]),
                                 configure_expectations=configure_expectations, result_format="SUMMARY")
ti = TI()
op.execute(context={"ti": ti})
seconds = time.perf_counter() - start
stats = ti.value["statistics"]
print(json.dumps({"seconds": seconds, "maxrss_kib": mem("VmHWM"),
                  "import_maxrss_kib": base, "success": ti.value["success"],
                  "evaluated": stats["evaluated_expectations"], "rows": len(op.dataframe)}))
"""


def run_child(python: str, program: str, spec: dict, env: dict, kill_bytes: int) -> dict:
    import psutil

    proc = subprocess.Popen(
        [python, "-c", program, json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        text=True,
    )  # fmt: skip
    peak = {"rss": 0, "killed": False}

    def sample() -> None:
        try:
            handle = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = handle.memory_info().rss
                peak["rss"] = max(peak["rss"], rss)
                if rss > kill_bytes:
                    peak["killed"] = True
                    proc.kill()
                    return
                time.sleep(0.05)
        except psutil.Error:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    if peak["killed"]:
        return {
            "error": f"stopped above {kill_bytes / (1 << 30):.1f} GiB RSS",
            "sampled_peak_rss": peak["rss"],
        }
    if proc.returncode != 0:
        return {
            "error": f"exit {proc.returncode}: {stderr.strip().splitlines()[-1:]}",
            "sampled_peak_rss": peak["rss"],
        }
    out = json.loads(stdout.strip().splitlines()[-1])
    out["sampled_peak_rss"] = peak["rss"]
    out["rows_per_s"] = out["rows"] / out["seconds"]
    return out


LABELS = {
    "arrow": "Arrow engine (`parquet_validation.validate_snapshot`)",
    "frame": "`ValidateDatasetOperator.execute` (the operator, through the Arrow engine)",
    "gx": "GXValidateDataFrameOperator (GX provider 1.0.0)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="side-by-side runs (medians are reported)")
    parser.add_argument(
        "--workdir", help="where the Parquet file and snapshot go (default: a temp dir, removed)"
    )
    parser.add_argument("--gx-python", help="interpreter with airflow-provider-great-expectations installed")
    parser.add_argument("--no-frame", action="store_true", help="skip the whole-DataFrame operator run")
    parser.add_argument("--kill-gib", type=float, default=7.0, help="stop a child whose RSS exceeds this")
    parser.add_argument("--markdown", help="write the results as a section of this Markdown page")
    parser.add_argument("--results", help="write --markdown from this saved JSON output instead of running")
    args = parser.parse_args()
    if args.results:
        results = json.loads(Path(args.results).read_text())
        path = Path(args.markdown)
        path.write_text(replace_section(path.read_text() if path.exists() else "", markdown(results)))
        return

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        uri, source, info = make_snapshot(workdir, args.rows)
        spec = {"uri": uri, "path": str(source), "suite": suite(args.rows)}
        env = dict(os.environ, GX_ANALYTICS_ENABLED="false", AIRFLOW_HOME=str(workdir / "airflow"))
        kill = int(args.kill_gib * (1 << 30))
        children = [("arrow", sys.executable, ARROW)]
        if not args.no_frame:
            children.append(("frame", sys.executable, OURS))
        if args.gx_python:
            children.append(("gx", args.gx_python, THEIRS))
        runs: dict[str, list[dict]] = {key: [] for key, _, _ in children}
        for index in range(args.repeat):
            for key, python, program in children:
                print(f"run {index + 1}/{args.repeat}: {key}", file=sys.stderr)
                runs[key].append(run_child(python, program, spec, env, kill))
        results = {"data": info, "expectations": len(spec["suite"]), "repeat": args.repeat, "runs": runs}
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.markdown:
        path = Path(args.markdown)
        path.write_text(replace_section(path.read_text() if path.exists() else "", markdown(results)))


def replace_section(page: str, section: str) -> str:
    """*page* with its :data:`SECTION` (up to the next ``## `` heading) replaced by *section*, or appended."""
    if SECTION not in page:
        return page.rstrip("\n") + "\n\n" + section
    head, rest = page.split(SECTION, 1)
    tail = rest[rest.index("\n## ") + 1 :] if "\n## " in rest else ""
    return head + section + ("\n" + tail if tail else "")


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(_median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def markdown(results: dict) -> str:
    data, runs = results["data"], results["runs"]
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/validate_large_parquet.py --repeat {results['repeat']} --gx-python "
        "<other-venv>/bin/python --markdown docs/scale.md` (the Great Expectations provider pins its own Airflow "
        "version, so it runs from a separate environment).",
        "",
        f"Data: {data['rows']:,} rows x {data['columns']} columns (16 numeric, 4 string), "
        f"{data['file_bytes'] / (1 << 20):.0f} MiB Parquet (snappy, {data['row_groups']} row groups); suite of "
        f"{results['expectations']} expectations (row count, not null, between, in set) on 8 of the columns. "
        "Each validation runs in a fresh process, the three one after the other in each round; seconds are "
        "reading + validating (imports excluded; ours also renders and writes its Data Docs page); peak memory "
        f"is the child's `VmHWM`. Median (range) of {results['repeat']} rounds.",
        "",
        "| validation | verdict | seconds | rows/s | peak memory |",
        "|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        done = [run for run in runs.get(key, []) if "error" not in run]
        failed = [run for run in runs.get(key, []) if "error" in run]
        if failed:
            lines.append(f"| {label} | did not finish: {failed[0]['error']} | | | |")
        if not done:
            continue
        verdicts = sorted({f"{run['success']} ({run['evaluated']} evaluated)" for run in done})
        lines.append(
            f"| {label} | {', '.join(verdicts)} | {_spread([r['seconds'] for r in done], '.1f')} | "
            f"{_median([r['rows_per_s'] for r in done]):,.0f} | "
            f"{_spread([r['maxrss_kib'] / (1 << 20) for r in done], '.2f')} GiB |"
        )
    theirs = runs.get("gx", [])
    for key, name in (("frame", "ValidateDatasetOperator"), ("arrow", "Arrow engine")):
        pairs = [
            (a, g) for a, g in zip(runs.get(key, []), theirs, strict=False) if "error" not in a and "error" not in g
        ]
        if pairs:
            ratios = [a["rows_per_s"] / g["rows_per_s"] for a, g in pairs]
            lines += [
                "",
                f"Throughput ratio, {name} / GX provider, per round: {', '.join(f'{r:.2f}' for r in ratios)} "
                f"(median {_median(ratios):.2f}).",
            ]
    lines += [
        "",
        "The first row is the Arrow engine of `airflow_mlops.data.parquet_validation` alone, through the same "
        "steps as the operator (build the suite, validate, summarise, write the Data Docs page); the second is "
        "the operator's `execute`, which validates a snapshot through that engine.",
        "",
        "The engine: Arrow compute over the Parquet file, with Great Expectations making the results. The row "
        "count comes from the file's footer; not-null, between and in-set checks on number and text columns are "
        "computed over record batches of 2^20 rows of only the columns they name (text read as Parquet "
        "dictionaries, so an in-set check looks each distinct value up once). Each expectation's own GX code "
        "(`metrics_validate`) turns those metrics into its result, so the counts, percents, `mostly`, the first "
        "20 unexpected values and row numbers, and the failure messages are GX's; a test compares every result "
        "with GX on the whole frame. Column-set and column-type expectations run in GX on a zero-row frame of the "
        'same schema. Any other expectation (or `result_format="COMPLETE"`) runs in GX on a DataFrame of the '
        "columns it names, and then memory grows with those columns.",
        "",
        "Why this engine: on 2M rows of these 8 columns, pandas took 1.3 s to read them and GX's pandas engine "
        "1.3 s to validate them; Arrow compute did the same checks in under 0.1 s once read. Validating batch by "
        "batch with GX would bound the memory but keep GX's pandas time, so it could not reach 2x. GX's SQL "
        "datasource on DuckDB was not tried: it would add two dependencies (duckdb and a SQLAlchemy dialect for "
        "it) for what pyarrow, already a dependency, does.",
        "",
        "The machine is a 2-core VM whose load varies between runs (an earlier 9-round run under heavy load from "
        "other jobs: Arrow engine / GX provider 3.45-30.01, median 10.76). Compare the ratios within a round, not "
        "seconds across pages.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
