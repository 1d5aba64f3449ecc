"""
DAG parse cost: ``dags/continuous_training.py`` against a DAG of the same shape made of EmptyOperators.

Each measurement runs in a fresh Python process that has already imported ``airflow.sdk`` and, like
Airflow's dag-processor before it forks its parsing processes, called ``gc.freeze()`` (so a garbage collection
does not scan what was imported before the DAG file); it times executing the DAG file (imports included) and
reports the median of several runs. Bytecode is written and one
warm-up run of each file is discarded first, as on a dag-processor whose packages were installed by pip:
otherwise the figure measures compiling sources, not parsing the DAG.

    python benchmarks/parse_cost.py [--runs 9] [--dag dags/continuous_training.py] [--json out.json]
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_TIME_ONE = textwrap.dedent(
    """
    import gc, os, sys, time, runpy
    import airflow.sdk  # already paid for: the dag-processor has it imported
    gc.freeze()  # as the dag-processor does before it forks the processes that parse DAG files
    t0 = time.perf_counter()
    runpy.run_path(sys.argv[1], run_name="dag_file")
    print(time.perf_counter() - t0)
    """
)

_SHAPE = textwrap.dedent(
    """
    import json, runpy, sys
    from airflow.sdk import DAG
    ns = runpy.run_path(sys.argv[1], run_name="dag_file")
    dag = next(v for v in ns.values() if isinstance(v, DAG))
    print(json.dumps({"dag_id": dag.dag_id,
                      "edges": sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
                      "tasks": [t.task_id for t in dag.tasks]}))
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=_env()
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return out.stdout.strip().splitlines()[-1]


def empty_twin(dag_file: Path, target: Path) -> Path:
    """Write a DAG with the same task ids and edges as *dag_file*, made of EmptyOperators."""
    shape = json.loads(_run(_SHAPE, str(dag_file)))
    lines = [
        "from airflow.sdk import DAG",
        "from airflow.providers.standard.operators.empty import EmptyOperator",
        f"with DAG(dag_id={shape['dag_id'] + '_empty_twin'!r}, schedule=None) as dag:",
        f"    t = {{i: EmptyOperator(task_id=i) for i in {shape['tasks']!r}}}",
        f"    for a, b in {shape['edges']!r}:",
        "        t[a] >> t[b]",
    ]
    target.write_text("\n".join(lines) + "\n")
    return target


def measure(dag_file: Path, runs: int) -> list[float]:
    return [float(_run(_TIME_ONE, str(dag_file))) for _ in range(runs)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dag", default=str(REPO / "dags" / "continuous_training.py"))
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    dag_file = Path(args.dag).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        twin = empty_twin(dag_file, Path(tmp) / "empty_twin.py")
        measure(dag_file, 1), measure(twin, 1)  # warm-up: write bytecode, fill OS caches
        ours, baseline = [], []
        for _ in range(args.runs):  # interleave, so machine noise hits both alike
            ours += measure(dag_file, 1)
            baseline += measure(twin, 1)
    result = {
        "dag": str(dag_file.relative_to(REPO)) if dag_file.is_relative_to(REPO) else str(dag_file),
        "runs": args.runs,
        "median_s": round(statistics.median(ours), 4),
        "range_s": [round(min(ours), 4), round(max(ours), 4)],
        "empty_twin_median_s": round(statistics.median(baseline), 4),
        "empty_twin_range_s": [round(min(baseline), 4), round(max(baseline), 4)],
        "ratio": round(statistics.median(ours) / statistics.median(baseline), 2),
        # Ratio of run i of ours to run i of the twin (interleaved runs): its spread shows the noise.
        "ratio_range": [
            round(min(a / b for a, b in zip(ours, baseline, strict=True)), 2),
            round(max(a / b for a, b in zip(ours, baseline, strict=True)), 2),
        ],
        "bound": 2.5,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ratio"] <= result["bound"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
