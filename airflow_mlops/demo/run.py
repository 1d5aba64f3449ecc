"""Run the continuous-training demo end to end on the embedded default (``airflow-mlops demo``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from airflow_mlops.demo.stack import DAG_ID, LocalStack

MODEL_NAME = "demo_churn_classifier"
WORSE_PARAMS = {"features": ["tenure_months"]}  # a candidate that sees one feature: worse than the champion


def _print(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_training(stack: LocalStack, conf: dict, auto_approve: bool, timeout: float) -> dict:
    """Trigger one continuous-training run and see it through the approval; return what happened."""
    run_id = stack.trigger(DAG_ID, conf)
    _print(f"triggered {DAG_ID} run {run_id}")
    state = stack.wait_for_approval_request(DAG_ID, run_id, "approve", timeout)
    outcome: dict = {"run_id": run_id}
    if state in ("awaiting_input", "deferred"):
        detail = stack.hitl_detail(DAG_ID, run_id, "approve")
        _print(f"approval requested: {detail['subject']}")
        _print(f"approve it here: {stack.required_actions_url} (user 'reviewer', password 'reviewer-pw')")
        if auto_approve:
            response = stack.respond(DAG_ID, run_id, "approve", "Approve", comment="approved by the demo")
            if response.status_code >= 300:
                raise RuntimeError(f"approval failed: HTTP {response.status_code} {response.text[:300]}")
            _print("approved as 'reviewer' through the HITL REST API")
    else:
        _print(f"no approval was requested (approve task: {state})")
    outcome["state"] = stack.wait_for_run(DAG_ID, run_id, timeout)
    outcome["tasks"] = stack.task_states(DAG_ID, run_id)
    outcome["champion"] = stack.alias_version(conf.get("model_name", MODEL_NAME))
    _print(f"run {run_id} ended {outcome['state']}; champion is version {outcome['champion']}")
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


def main(argv: list[str] | None = None) -> int:
    """``airflow-mlops demo``: run the demo end to end and report what served."""
    parser = argparse.ArgumentParser(prog="airflow-mlops demo", description=__doc__)
    parser.add_argument("--home", default=".demo", help="folder for every file the demo writes (default .demo)")
    parser.add_argument("--auto-approve", action="store_true", help="approve as user 'reviewer' via the REST API")
    parser.add_argument(
        "--worse-run", action="store_true", help="then trigger a worse candidate that must stop at the gate"
    )
    parser.add_argument("--keep-running", action="store_true", help="leave the services up until Ctrl-C")
    parser.add_argument("--port", type=int, default=28080, help="Airflow api-server port (default 28080)")
    parser.add_argument("--mlflow-port", type=int, default=25000, help="MLflow server port (default 25000)")
    parser.add_argument("--serving-port", type=int, default=25001, help="model endpoint port (default 25001)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each run")
    args = parser.parse_args(argv)

    stack = LocalStack(
        Path(args.home), airflow_port=args.port, mlflow_port=args.mlflow_port, serving_port=args.serving_port
    )
    _print(f"starting Airflow on {stack.airflow_url} and MLflow on {stack.mlflow_url} (files in {stack.home})")
    ok = True
    try:
        stack.start()
        _print(f"Airflow UI: {stack.airflow_url} (user 'admin', password 'admin-pw'); MLflow UI: {stack.mlflow_url}")
        first = run_training(stack, {"model_name": MODEL_NAME}, args.auto_approve, args.timeout)
        ok = first["state"] == "success" and first["champion"] is not None and first["serving"] == first["champion"]
        if args.worse_run:
            before = first["champion"]
            second = run_training(
                stack, {"model_name": MODEL_NAME, "model_params": WORSE_PARAMS}, args.auto_approve, args.timeout
            )
            stopped = second["tasks"].get("approve") == "skipped" and second["champion"] == before
            _print(
                "the worse candidate stopped at the gate; champion unchanged"
                if stopped
                else f"unexpected: {second}"
            )
            ok = ok and stopped
        if args.keep_running:
            _print("services keep running; press Ctrl-C to stop them")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        _print("stopping every service")
        stack.stop()
    _print("done" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
