"""
Peak memory of the worker computing drift between two Parquet snapshots: one column at a time (what
``DriftCheckOperator`` does) vs both tables as pandas frames (what it did before).

Writes a reference and a current snapshot of ``--rows`` x 20 features (16 continuous, two of them shifted in the
current one, and 4 text categories) in 1M-row batches, then, each in a fresh child process:

- columns: ``compute_drift_snapshots`` (Parquet column projection; text counted in Arrow);
- whole frames (up to ``--frame-rows``): ``read_snapshot`` of both and ``compute_drift``;

and reports seconds, the child's peak resident memory (``VmHWM``) and the drifted features.

    python benchmarks/drift_memory.py [--rows 2000000 5000000 10000000] [--frame-rows 2000000] [--markdown docs/scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTION = "## Drift of two Parquet snapshots in the worker: peak memory"
NUMERIC, TEXT = 16, 4
BATCH = 1_000_000


def write_snapshot(folder: Path, rows: int, shift: float, seed: int) -> str:
    """A snapshot folder (``data.parquet`` and ``_manifest.json``) of *rows* synthetic rows."""
    from airflow_mlops.data.snapshots import manifest_bytes

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    categories = np.array(["basic", "plus", "pro", "max", "free"])
    writer = None
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        columns = {
            f"f{i:02d}": rng.normal(shift * (1.0 + i) if i < 2 else 0.0, 1.0 + i, n) for i in range(NUMERIC)
        }
        columns |= {f"c{i:02d}": categories[rng.integers(0, 5, n)] for i in range(TEXT)}
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(folder / "data.parquet", table.schema)
        writer.write_table(table, row_group_size=BATCH)
    assert writer is not None
    writer.close()
    manifest = {"name": "bench", "rows": rows, "files": {"data": "data.parquet"}, "snapshot_id": folder.name}
    (folder / "_manifest.json").write_bytes(manifest_bytes(manifest))
    return str(folder)


WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
import numpy, pandas, pyarrow.parquet, scipy.stats  # noqa: F401 - imported by both paths, not timed
from airflow_mlops.data.drift import compute_drift, compute_drift_snapshots
from airflow_mlops.data.snapshots import read_snapshot
start = time.perf_counter()
if spec["mode"] == "columns":
    report = compute_drift_snapshots(spec["reference"], spec["current"])
else:
    report = compute_drift(read_snapshot(spec["reference"]), read_snapshot(spec["current"]))
print(json.dumps({"seconds": round(time.perf_counter() - start, 1), "peak_rss_kib": peak_kib(),
                  "drifted": report["drifted_features"]}))
"""


def run(mode: str, reference: str, current: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps({"mode": mode, "reference": reference, "current": current})],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--frame-rows", type=int, default=2_000_000, help="largest size read as whole frames")
    parser.add_argument("--markdown", help="replace (or add) this benchmark's section of this Markdown page")
    args = parser.parse_args()

    results = []
    for rows in args.rows:
        workdir = Path(tempfile.mkdtemp(prefix="mlops-drift-memory-"))
        try:
            reference = write_snapshot(workdir / "reference", rows, 0.0, seed=1)
            current = write_snapshot(workdir / "current", rows, 0.6, seed=2)
            size = sum(f.stat().st_size for f in workdir.rglob("*.parquet"))
            result = {"rows": rows, "parquet_bytes": size, "columns": run("columns", reference, current)}
            if rows <= args.frame_rows:
                result["frames"] = run("frames", reference, current)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.markdown:
        path = Path(args.markdown)
        text = path.read_text() if path.exists() else ""
        head, _, rest = text.partition(SECTION)
        tail = rest[rest.find("\n## ") :] if "\n## " in rest else ""
        path.write_text(head.rstrip("\n") + "\n\n" + markdown(results, args) + tail)


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    def gib(kib: int) -> str:
        return f"{kib / (1 << 20):.2f} GiB"

    lines = [
        f"{SECTION} (rows x {NUMERIC + TEXT} features each)",
        "",
        f"`python benchmarks/drift_memory.py --rows {' '.join(str(r) for r in args.rows)}"
        f" --frame-rows {args.frame_rows}`: two snapshots of {NUMERIC} continuous and {TEXT} text features,"
        " one run per size (peak memory varies little between runs; the seconds are one run on a shared machine).",
        "",
        "| rows each | Parquet on disk | path | seconds | worker peak memory | drifted features |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for key, label in (("columns", "one column at a time"), ("frames", "whole frames (before)")):
            if key not in result:
                continue
            r = result[key]
            if "error" in r:
                lines.append(f"| {result['rows']:,} | | {label} | failed: {r['error']} | | |")
                continue
            lines.append(
                f"| {result['rows']:,} | {result['parquet_bytes'] / (1 << 30):.2f} GiB | {label} | {r['seconds']} |"
                f" {gib(r['peak_rss_kib'])} | {', '.join(r['drifted']) or 'none'} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
