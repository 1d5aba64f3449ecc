"""
Run DAGs end to end on a local Airflow + MLflow stack (``airflow-mlops demo``).

By default it runs the package's continuous-training example (the example DAGs ship in the package);
``--dags FOLDER [--dag ID]`` runs your own, and ``--init FOLDER`` writes the examples and the demo data to a
folder to start from. SIGTERM or Ctrl-C stops every process the demo started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow_mlops.approvals import APPROVE, AlreadyAnsweredError, ApprovalClient
from airflow_mlops.demo.stack import DAG_ID, FINISHED, REPO_DAGS, LocalStack, StackError

#: Where the example DAGs are (in the package, or the checkout's ``dags/``).
EXAMPLE_DAGS = REPO_DAGS

MODEL_NAME = "demo_churn_classifier"
WORSE_PARAMS = {"features": ["tenure_months"]}  # a candidate that sees one feature: worse than the champion
#: The user who approves (the demo triggers as ``admin``; nobody approves their own run).
APPROVER = "reviewer"


def _print(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def approve_command(stack: LocalStack, dag_id: str, run_id: str, user: str = APPROVER) -> str:
    """The ``airflow-mlops approve`` command line that answers this run's approval as *user*."""
    return (
        f"MLOPS_AIRFLOW_PASSWORD={stack.passwords[user]} airflow-mlops approve {dag_id} '{run_id}' "
        f"--as {user} --url {stack.airflow_url} --comment 'looks good'"
    )


def see_run_through(
    stack: LocalStack, dag_id: str, conf: dict[str, Any], auto_approve: bool, timeout: float
) -> dict[str, Any]:
    """
    Trigger *dag_id* and follow the run until it ends; say how to answer each approval it asks for.

    With *auto_approve* each approval is answered ``Approve`` as ``reviewer`` through the REST API, as
    ``airflow-mlops approve`` does, as soon as it is seen; a request the same task makes again (a later try
    that could not adopt the earlier answer) is answered too. Returns ``{"run_id", "state", "tasks"}``.
    """
    run_id = stack.trigger(dag_id, conf)
    _print(f"triggered {dag_id} run {run_id}")
    client = ApprovalClient(stack.airflow_url, user=APPROVER, password=stack.passwords[APPROVER])
    seen: set[tuple[str, int, int]] = set()  # (task, map index, try) of each request seen
    deadline = time.monotonic() + timeout
    while (state := stack.run_state(dag_id, run_id)) not in FINISHED:
        if time.monotonic() > deadline:
            raise StackError(f"{dag_id}/{run_id} did not finish within {timeout:.0f}s")
        for request in client.pending(dag_id, run_id):
            key = (request.task_id, request.map_index, request.try_number)
            if key in seen:
                continue
            again = any(task_id == request.task_id for task_id, _, _ in seen)
            seen.add(key)
            asked = f"asked again (try {request.try_number})" if again else "approval requested"
            _print(f"{asked} by task {request.task_id}: {request.subject}")
            if not auto_approve:
                _print(f"approve it from another shell: {approve_command(stack, dag_id, run_id)}")
                _print(f"(or `airflow-mlops reject ...`), or in the UI: {stack.required_actions_url}")
                _print(f"(user {APPROVER!r}, password {stack.passwords[APPROVER]!r})")
                continue
            try:
                client.answer(request, APPROVE, "approved by the demo")
            except AlreadyAnsweredError:
                continue  # answered meanwhile (in the UI, or by a shell)
            _print(f"approved as {APPROVER!r} through the HITL REST API")
        time.sleep(2)
    tasks = stack.task_states(dag_id, run_id)
    _print(f"run {run_id} ended {state}: {tasks}")
    _print(f"see it at {stack.airflow_url}/dags/{dag_id}/runs/{quote(run_id)}")
    return {"run_id": run_id, "state": state, "tasks": tasks}


def run_training(stack: LocalStack, conf: dict, auto_approve: bool, timeout: float) -> dict:
    """Trigger one continuous-training run and see it through the approval; return what happened."""
    outcome = see_run_through(stack, DAG_ID, conf, auto_approve, timeout)
    outcome["champion"] = stack.alias_version(conf.get("model_name", MODEL_NAME))
    _print(f"champion is version {outcome['champion']}")
    if outcome["champion"] is not None:
        outcome["serving"], predictions = stack.predict(sample_records(stack))
        _print(f"{stack.serving_url}/invocations is served by version {outcome['serving']}: {predictions}")
    return outcome


def sample_records(stack: LocalStack, rows: int = 3) -> list[dict]:
    """A few rows of the demo data, without the label, as a client would send them."""
    import csv

    with open(stack.source_path, newline="") as source:
        reader = csv.DictReader(source)
        records = [row for _, row in zip(range(rows), reader, strict=False)]
    return [{k: float(v) for k, v in row.items() if k != "label"} for row in records]


def unpause_all(stack: LocalStack) -> list[str]:
    """Unpause every DAG the stack parsed (the example DAGs run on their schedules); return their ids."""
    dags = stack._ok(stack.api("GET", "/dags", params={"limit": 100, "paused": True})).get("dags", [])
    for dag in dags:
        stack._ok(stack.api("PATCH", f"/dags/{dag['dag_id']}", json={"is_paused": False}))
    return sorted(dag["dag_id"] for dag in dags)


def dag_files(folder: Path) -> list[Path]:
    """The Python files of a DAG folder (what the dag-processor would parse)."""
    return sorted(path for path in folder.glob("*.py") if not path.name.startswith(("_", ".")))


def init_folder(folder: Path) -> int:
    """Write the example DAGs and the demo data to *folder* (``--init``); refuse to overwrite a file."""
    from airflow_mlops.demo.data import make_demo_data

    examples = dag_files(EXAMPLE_DAGS)
    if not examples:
        _print(f"no example DAGs at {EXAMPLE_DAGS}: this install of airflow-provider-mlops lacks them")
        return 1
    data = folder / "data" / "customers.csv"
    taken = [path for path in [*(folder / "dags" / f.name for f in examples), data] if path.exists()]
    if taken:
        _print(f"--init {folder}: would overwrite {', '.join(map(str, taken))}; pick an empty folder")
        return 1
    (folder / "dags").mkdir(parents=True, exist_ok=True)
    for example in examples:
        shutil.copy2(example, folder / "dags" / example.name)
    make_demo_data(data)
    _print(f"wrote {len(examples)} example DAGs to {folder / 'dags'} and the demo data to {data}")
    _print(f"run one: airflow-mlops demo --dags {folder / 'dags'} --dag {DAG_ID} --auto-approve")
    _print(f'(other data: --conf \'{{"model_name": "...", "data_path": "{data.resolve()}"}}\')')
    return 0


class Stopped(BaseException):  # noqa: N818 - a signal, not an error
    """SIGTERM or SIGINT reached the demo: stop every service and exit with 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def choose_dag(stack: LocalStack, wanted: str | None, timeout: float = 240.0) -> str:
    """*wanted*, or the only DAG of the folder once parsed; several DAGs without *wanted* is an error."""
    if wanted:
        return wanted
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dags = sorted(dag["dag_id"] for dag in stack.api("GET", "/dags").json().get("dags", []))
        if dags:
            time.sleep(10)  # let the dag-processor finish the folder
            dags = sorted(dag["dag_id"] for dag in stack.api("GET", "/dags").json().get("dags", []))
            if len(dags) == 1:
                return dags[0]
            raise StackError(
                f"{stack.dags_folder} holds several DAGs ({', '.join(dags)}): pick one with --dag"
            )
        time.sleep(2)
    errors = stack.api("GET", "/importErrors").text[:2000]
    raise StackError(
        f"no DAG of {stack.dags_folder} was parsed within {timeout:.0f}s; import errors: {errors}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The options of ``airflow-mlops demo``."""
    parser = argparse.ArgumentParser(prog="airflow-mlops demo", description=__doc__)
    parser.add_argument(
        "--dags", type=Path, help="run the DAGs of this folder instead of the package's example"
    )
    parser.add_argument(
        "--init",
        type=Path,
        metavar="FOLDER",
        help="write the example DAGs (FOLDER/dags) and the demo data (FOLDER/data) to start from, then exit",
    )
    parser.add_argument(
        "--dag", help=f"the DAG to trigger (default {DAG_ID}; with --dags, the folder's only DAG)"
    )
    parser.add_argument(
        "--conf", type=json.loads, help="the run's conf, as JSON (default for the example: its model name)"
    )
    parser.add_argument(
        "--home", default=".demo", help="folder for every file the demo writes (default .demo)"
    )
    parser.add_argument(
        "--auto-approve", action="store_true", help="approve as user 'reviewer' via the REST API"
    )
    parser.add_argument(
        "--worse-run", action="store_true", help="then trigger a worse candidate that must stop at the gate"
    )
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="then serve the champion with capture, send shifted traffic, and show monitoring start a retraining run",
    )
    parser.add_argument("--keep-running", action="store_true", help="leave the services up until Ctrl-C")
    parser.add_argument("--port", type=int, default=28080, help="Airflow api-server port (default 28080)")
    parser.add_argument("--mlflow-port", type=int, default=25000, help="MLflow server port (default 25000)")
    parser.add_argument("--serving-port", type=int, default=25001, help="model endpoint port (default 25001)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each run")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``airflow-mlops demo``: run a DAG end to end and report how it ended."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.init is not None:
        return init_folder(args.init)
    if args.dags is not None and not args.dags.is_dir():
        parser.error(f"--dags {args.dags}: no such folder")
    dags_folder = args.dags or EXAMPLE_DAGS
    if not dag_files(dags_folder):
        parser.error(
            f"no DAG files in {dags_folder}"
            + (
                ": give a folder of DAGs with --dags FOLDER"
                if args.dags
                else " (this install of airflow-provider-mlops lacks the example DAGs): reinstall the package, "
                "or give a folder of DAGs with --dags FOLDER (`airflow-mlops demo --init FOLDER` writes the "
                "examples there)"
            )
        )
    example = args.dags is None and args.dag in (None, DAG_ID)
    if args.worse_run and not example:
        parser.error(f"--worse-run runs the package's example ({DAG_ID}); leave out --dags and --dag")

    stack = LocalStack(
        Path(args.home), airflow_port=args.port, mlflow_port=args.mlflow_port, serving_port=args.serving_port,
        dags_folder=dags_folder,
    )  # fmt: skip
    _print(
        f"starting Airflow on {stack.airflow_url} and MLflow on {stack.mlflow_url} (files in {stack.home})"
    )
    _print(f"DAG folder: {stack.dags_folder}")
    ok = True
    signalled: Stopped | None = None
    handlers = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stack.start()
        _print(
            f"Airflow UI: {stack.airflow_url} (user 'admin', password 'admin-pw'); MLflow UI: {stack.mlflow_url}"
        )
        if example:
            conf = {"model_name": MODEL_NAME} if args.conf is None else args.conf
            first = run_training(stack, conf, args.auto_approve, args.timeout)
            ok = (
                first["state"] == "success"
                and first["champion"] is not None
                and first["serving"] == first["champion"]
            )
            if ok:
                _print(
                    f"unpaused the other example DAGs (they run on their schedules): {', '.join(unpause_all(stack))}"
                )
        else:
            dag_id = choose_dag(stack, args.dag)
            ok = (
                see_run_through(stack, dag_id, args.conf or {}, args.auto_approve, args.timeout)["state"]
                == "success"
            )
        if args.worse_run:
            before = first["champion"]
            second = run_training(
                stack,
                {"model_name": MODEL_NAME, "model_params": WORSE_PARAMS},
                args.auto_approve,
                args.timeout,
            )
            stopped = second["tasks"].get("approve") == "skipped" and second["champion"] == before
            _print(
                "the worse candidate stopped at the gate; champion unchanged"
                if stopped
                else f"unexpected: {second}"
            )
            ok = ok and stopped
        if args.monitoring:
            from airflow_mlops.demo.monitoring import run_monitoring

            ok = run_monitoring(stack, MODEL_NAME, args.timeout) and ok
        if args.keep_running:
            _print("services keep running; press Ctrl-C to stop them")
            while True:
                time.sleep(3600)
    except Stopped as stop:
        signalled = stop
    except StackError as err:
        _print(str(err))
        ok = False
    finally:
        # A second signal must not cut the stop short: every process goes, then the demo exits.
        for sig in handlers:
            signal.signal(sig, signal.SIG_IGN)
        _print("stopping every service")
        stack.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if signalled is not None:
        _print(f"stopped by {signal.Signals(signalled.signum).name}")
        return 128 + signalled.signum
    _print("done" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
