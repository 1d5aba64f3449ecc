"""
Peak memory of the worker computing drift between two Parquet snapshots: one column at a time (what
``DriftCheckOperator`` does) vs both tables as pandas frames (what it did before).

Writes a reference and a current snapshot of ``--rows`` x 20 features (16 continuous, two of them shifted in the
current one, and 4 text categories) in 1M-row batches, then, each in a fresh child process:

- columns: ``compute_drift_snapshots`` (Parquet column projection; text counted in Arrow);
- whole frames (up to ``--frame-rows``): ``read_snapshot`` of both and ``compute_drift``;

and reports seconds, the child's peak resident memory (``VmHWM``) and the drifted features; with ``--repeat N``,
the median of N runs and their range.

    python benchmarks/drift_memory.py [--rows 2000000 5000000 10000000] [--frame-rows 2000000] [--repeat 1]
        [--markdown docs/scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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


def run(mode: str, reference: str, current: str, repeat: int = 1) -> dict:
    runs = [_run_once(mode, reference, current) for _ in range(repeat)]
    failed = next((r for r in runs if "error" in r), None)
    if failed or repeat == 1:
        return failed or runs[0]
    seconds = sorted(r["seconds"] for r in runs)
    peaks = sorted(r["peak_rss_kib"] for r in runs)
    return {
        "seconds": statistics.median(seconds), "seconds_range": [seconds[0], seconds[-1]],
        "peak_rss_kib": int(statistics.median(peaks)), "peak_range_kib": [peaks[0], peaks[-1]],
        "runs": repeat, "drifted": runs[0]["drifted"],
    }  # fmt: skip


def _run_once(mode: str, reference: str, current: str) -> dict:
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
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path per size (median and range)")
    parser.add_argument("--markdown", help="replace (or add) this benchmark's section of this Markdown page")
    args = parser.parse_args()

    results = []
    for rows in args.rows:
        workdir = Path(tempfile.mkdtemp(prefix="mlops-drift-memory-"))
        try:
            reference = write_snapshot(workdir / "reference", rows, 0.0, seed=1)
            current = write_snapshot(workdir / "current", rows, 0.6, seed=2)
            size = sum(f.stat().st_size for f in workdir.rglob("*.parquet"))
            result = {
                "rows": rows, "parquet_bytes": size, "columns": run("columns", reference, current, args.repeat)
            }  # fmt: skip
            if rows <= args.frame_rows:
                result["frames"] = run("frames", reference, current, args.repeat)
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
    """This run's section: the command that reproduces it and one row per size and path."""
    return f"{SECTION} ({NUMERIC + TEXT} features)\n\n" + table(results, args)


def table(results: list[dict], args: argparse.Namespace) -> str:
    def gib(kib: int) -> str:
        return f"{kib / (1 << 20):.2f} GiB"

    def spread(r: dict, key: str, scale: float = 1.0, unit: str = "", name: str | None = None) -> str:
        low, high = r.get(name or f"{key}_range", [None, None])
        return "" if low is None else f" ({low / scale:.2f}-{high / scale:.2f}{unit})"

    command = f"python benchmarks/drift_memory.py --rows {' '.join(str(r) for r in args.rows)}"
    command += f" --frame-rows {args.frame_rows}" + (f" --repeat {args.repeat}" if args.repeat > 1 else "")
    lines = [
        f"`{command}`: two snapshots of {NUMERIC} continuous and {TEXT} text features each; "
        + (f"median of {args.repeat} runs (range)." if args.repeat > 1 else "one run per size."),
        "",
        "| rows each | Parquet on disk | path | seconds | worker peak memory | drifted features |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for key, label in (("columns", "one column at a time"), ("frames", "both tables as frames")):
            if key not in result:
                continue
            r = result[key]
            if "error" in r:
                lines.append(f"| {result['rows']:,} | | {label} | failed: {r['error']} | | |")
                continue
            lines.append(
                f"| {result['rows']:,} | {result['parquet_bytes'] / (1 << 30):.2f} GiB | {label} |"
                f" {r['seconds']}{spread(r, 'seconds')} |"
                f" {gib(r['peak_rss_kib'])}{spread(r, 'peak', 1 << 20, ' GiB', 'peak_range_kib')} | {', '.join(r['drifted']) or 'none'} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
