"""
Approvals lost to a fast answer: how often a reviewer who answers N seconds after the request is asked again.

On a local Airflow + MLflow stack (``LocalStack``: api-server, scheduler with the LocalExecutor, dag-processor,
triggerer, ``mlflow server``) two DAGs hold one ``ApproveModelOperator`` each (``retries=1``, no retry delay, as
the example DAGs retry): ``approval_race_asks_again`` with ``adopt_earlier_answer=False`` (a retry asks again:
the behaviour before adoption, the same code path minus the adoption) and ``approval_race_adopts`` (the
default). For each delay, each round triggers one run of each DAG at the same time, waits until its approval
task is ``awaiting_input``, answers ``Approve`` as ``reviewer`` through the HITL REST API after the delay, then
follows the run to its end; a request the task makes again is counted and answered at once so the run ends.

    python benchmarks/approval_race.py --runs 10 --delays 0,1,3,5 --markdown docs/reliability.md

``--markdown`` adds (or replaces) the section "Approvals answered at once" of the page.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from airflow_mlops.demo.stack import FINISHED, LocalStack

MODEL = "approval_race_model"
VARIANTS = {"approval_race_asks_again": False, "approval_race_adopts": True}
SECTION = "## Approvals answered at once"

DAG_FILE = """
from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from airflow_mlops.operators.approval import ApproveModelOperator

with DAG({dag_id!r}, schedule=None, catchup=False, default_args={{"retries": 1, "retry_delay": timedelta(0)}}):
    ApproveModelOperator(
        task_id="approve", model_name={model!r}, candidate_version=1, report="benchmark",
        adopt_earlier_answer={adopt!r},
    ) >> EmptyOperator(task_id="promote")
"""


@dataclass
class Run:
    """One DAG run followed to its end."""

    dag_id: str
    run_id: str
    delay: float
    seen: float | None = None  # when the benchmark saw the first request
    answered_tries: list[int] = field(default_factory=list)
    state: str | None = None
    tries: int = 0
    server_errors: int = 0  # answers the API server failed with a 5xx (sent again)

    @property
    def asked_again(self) -> bool:
        return len(self.answered_tries) > 1


def follow(stack: LocalStack, runs: list[Run], timeout: float) -> None:
    """Answer each run's requests (the first after its delay, any later one at once) until every run ends."""
    deadline = time.monotonic() + timeout
    while any(run.state is None for run in runs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs did not finish within {timeout:.0f}s: {runs}")
        for run in runs:
            if run.state is not None:
                continue
            if stack.run_state(run.dag_id, run.run_id) in FINISHED:
                run.state = stack.run_state(run.dag_id, run.run_id)
                run.tries = int(stack.task_instances(run.dag_id, run.run_id)["approve"]["try_number"])
                continue
            ti = stack.task_instances(run.dag_id, run.run_id)["approve"]
            try_number = int(ti["try_number"])
            if ti["state"] != "awaiting_input" or try_number in run.answered_tries:
                continue
            now = time.monotonic()
            if run.seen is None:
                run.seen = now
            if not run.answered_tries and now < run.seen + run.delay:
                continue
            answer = stack.respond(run.dag_id, run.run_id, "approve", "Approve", user="reviewer")
            if answer.status_code >= 500 and run.server_errors < 10:
                # The API server on SQLite can fail a write while the machine is busy: answer on the next poll.
                run.server_errors += 1
                print(f"{run.dag_id}/{run.run_id}: HTTP {answer.status_code}, answering again", flush=True)
                continue
            if answer.status_code >= 300:
                raise RuntimeError(
                    f"{run.dag_id}/{run.run_id}: HTTP {answer.status_code} {answer.text[:300]}"
                )
            run.answered_tries.append(try_number)
        time.sleep(0.25)


def measure(stack: LocalStack, delays: list[float], rounds: int, timeout: float) -> list[Run]:
    done: list[Run] = []
    for delay in delays:
        for i in range(rounds):
            runs = [
                Run(dag_id, stack.trigger(dag_id, run_id=f"race-{delay:g}s-{i}-{dag_id}"), delay)
                for dag_id in VARIANTS
            ]
            follow(stack, runs, timeout)
            for run in runs:
                print(
                    f"delay {delay:g}s {run.dag_id}: {run.state}, tries {run.tries}, "
                    f"answered {len(run.answered_tries)}x",
                    flush=True,
                )
            done.extend(runs)
    return done


def table(runs: list[Run], delays: list[float]) -> list[str]:
    lines = [
        "| answered after | adoption | runs | asked again (answer lost) | needed an extra try | runs failed |",
        "|---|---|---|---|---|---|",
    ]
    for delay in delays:
        for dag_id, adopt in VARIANTS.items():
            mine = [run for run in runs if run.delay == delay and run.dag_id == dag_id]
            lines.append(
                f"| {delay:g} s | {'on' if adopt else 'off'} | {len(mine)} | "
                f"{sum(run.asked_again for run in mine)} | {sum(run.tries > 1 for run in mine)} | "
                f"{sum(run.state != 'success' for run in mine)} |"
            )
    return lines


def markdown(runs: list[Run], delays: list[float], rounds: int, minutes: float) -> str:
    from airflow import __version__ as airflow_version

    delays_arg = ",".join(f"{d:g}" for d in delays)
    return "\n".join(
        [
            SECTION,
            "",
            "How often a reviewer who answers an approval request at once is asked again. On Airflow 3.3.2 an",
            "answer that lands before the scheduler has handled the exit of the try that asked makes the scheduler",
            "fail that try and retry the task; a retry that asks again clears the first answer. Since the",
            "adoption (docs/models.md), the retry takes the answer Airflow still holds for the earlier try.",
            "",
            f"Measured with `python benchmarks/approval_race.py --runs {rounds} --delays {delays_arg} --markdown "
            "docs/reliability.md` on a LocalStack (Airflow services on SQLite with the LocalExecutor, parallelism",
            f"2, `mlflow server`), Airflow {airflow_version}, {os.cpu_count()} CPU cores ({platform.machine()}),",
            f"while other work ran on the machine; {minutes:.0f} minutes in all. Two DAGs, one approval each",
            "(`retries=1`, no retry delay), one run of each per round, at the same time; the delay counts from",
            "when the benchmark saw the task `awaiting_input` (it polls every quarter second) to its answer through",
            'the HITL REST API. "Adoption off" is the same operator with `adopt_earlier_answer=False`, which',
            "runs the code path of the releases before adoption. A request asked again was answered at once, so",
            "every run ended.",
            "",
            *table(runs, delays),
            "",
        ]
    )


def add_section(page: str, section: str) -> str:
    """*page* with *section* replacing the section of the same ``## `` heading, or added at the end."""
    parts = page.split("\n## ")
    kept = [parts[0].rstrip("\n")] + [
        p.rstrip("\n") for p in parts[1:] if "## " + p.splitlines()[0] != SECTION
    ]
    return "\n\n## ".join(kept) + "\n\n" + section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per delay and DAG (default 10)")
    parser.add_argument(
        "--delays", default="0,1,3,5", help="seconds between request and answer (default 0,1,3,5)"
    )
    parser.add_argument("--markdown", type=Path, help="add or replace the result section of this page")
    parser.add_argument("--home", type=Path, help="folder for the stack's files (default a temporary one)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a round may take (default 600)")
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.delays.split(",")]

    home = args.home or Path(tempfile.mkdtemp(prefix="approval-race-"))
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for dag_id, adopt in VARIANTS.items():
        (dags / f"{dag_id}.py").write_text(
            textwrap.dedent(DAG_FILE).format(dag_id=dag_id, model=MODEL, adopt=adopt)
        )
    started = time.monotonic()
    with LocalStack(home, dags_folder=dags) as stack:
        from mlflow import MlflowClient

        client = MlflowClient(stack.mlflow_url, registry_uri=stack.mlflow_url)
        client.create_registered_model(MODEL)
        run = client.create_run(client.create_experiment("approval-race"))
        client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        runs = measure(stack, delays, args.runs, args.timeout)
    minutes = (time.monotonic() - started) / 60
    print("\n".join(table(runs, delays)))
    print(json.dumps({"minutes": round(minutes, 1)}))
    if args.markdown:
        page = args.markdown.read_text() if args.markdown.exists() else "# Reliability\n"
        args.markdown.write_text(add_section(page, markdown(runs, delays, args.runs, minutes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
