"""
Kill points: the real operators in real Airflow task processes, killed with SIGKILL at named step
boundaries and retried by Airflow itself (``retries=1``, no delay), on the live stack (api-server,
scheduler with the LocalExecutor, dag-processor, triggerer, ``mlflow server``) with the local model server
and the KServe stand-in (tests/support/kubernetes/kserve.py) as targets.

Each DAG run carries one kill point per task (tests/kill/faults.py; DAGs in tests/kill/dags/). After each run
the tests check, from Airflow, MLflow and the endpoints as a user would: the run's outcome, two tries of
every killed task, ``champion`` == what the endpoint serves == the last successful deployment, no duplicate
snapshot / model version / deployment entry, full verification (smoke test, canary bake) after a killed
deploy, traffic on one version, a killed rollback finished to the version it chose, with reason and actor, and
no trainer or infra-validation sandbox left running by a killed try.
The table of outcomes is docs/reliability.md.

The tests of this module share one stack and run in order: each builds on the registry state the last left.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import contextmanager

import pytest

from airflow_mlops.demo.data import make_demo_data
from airflow_mlops.demo.run import sample_records
from tests.kill.support import (
    KilledRun,
    approve_version,
    champion,
    entries_of,
    history,
    kserve_requests,
    kserve_traffic,
    last_succeeded,
    local_served_version,
    logged_numbers,
    process_running,
    run_with_kills,
    task_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.live]

TRAINING = "mlops_kill_training"
RELEASE = "mlops_kill_release"
ROLLBACK = "mlops_kill_rollback"
LOCAL_MODEL, KSERVE_MODEL, CANARY_MODEL = "kill_churn", "kill_kserve", "kill_canary"
SMOKE = re.compile(r"smoke test", re.IGNORECASE)


@pytest.fixture(scope="module")
def stack(live_stack):
    return live_stack


@pytest.fixture(scope="module")
def kube(live_kube):
    return live_kube


@pytest.fixture(scope="module")
def client(stack):
    from mlflow import MlflowClient

    return MlflowClient(stack.mlflow_url)


@pytest.fixture(scope="module")
def serving_port(stack) -> int:
    return int(stack.settings()["MLOPS_KILL_SERVING_PORT"])


@pytest.fixture(scope="module")
def state() -> dict:
    """What the earlier tests of this module left: snapshot URIs, versions."""
    return {}


@pytest.fixture(scope="module")
def results():
    """Outcome of every promise checked, by cell (``task @ kill point``); written to the test artifacts."""
    from tests.conftest import ARTIFACTS

    found: dict[str, list[str]] = {}
    yield found
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "kill-points.json").write_text(json.dumps(found, indent=2))


class Findings:
    """Check every promise of a run, record each outcome by cell, and fail the test at the end if any broke."""

    def __init__(self, results: dict[str, list[str]], run: KilledRun) -> None:
        self.results, self.run, self.failures = results, run, []

    def cell(self, task_id: str) -> str:
        return f"{self.run.dag_id}: {task_id} @ {self.run.kills.get(task_id, 'no kill')}"

    @contextmanager
    def check(self, task_id: str, promise: str):
        cell = self.cell(task_id)
        try:
            yield
        except Exception as err:  # an error reading the outcome is a broken promise of this cell too
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.results.setdefault(cell, []).append(f"FAIL {promise}: {first[:300]}")
            self.failures.append(f"{cell}: {promise}: {err}")
        else:
            self.results.setdefault(cell, []).append(f"ok {promise}")

    def killed_and_retried(self, stack) -> None:
        """Every kill point was reached, and Airflow retried the killed task once."""
        for task_id, point in self.run.kills.items():
            with self.check(task_id, "killed at its kill point, retried by Airflow"):
                assert self.run.fired[task_id], f"kill point {point} never reached: {self.run.describe()}"
                assert self.run.tries[task_id] == 2, self.run.describe()
                assert self.run.states[task_id] == "success", self.run.describe()
                assert f"Kill point {point} armed" in task_log(stack, self.run, task_id, 1)

    def finish(self) -> None:
        assert not self.failures, "\n\n".join(self.failures)


def assert_approved_champion(client, name: str) -> str:
    """The champion passed the gate and carries a recorded approval (decision, approver, time)."""
    version = champion(client, name)
    assert version is not None, f"model {name} has no champion"
    tags = client.get_model_version(name, version).tags
    assert tags.get("mlops.gate.decision") == "passed", tags
    assert tags.get("mlops.approval.decision") == "approved", tags
    assert tags.get("mlops.approval.approver"), tags
    assert tags.get("mlops.approval.time"), tags
    return version


def assert_one_entry_per_event(client, name: str, run: KilledRun, task_id: str) -> list[dict]:
    """The task instance wrote each deployment entry once, however many tries it took."""
    entries = entries_of(client, name, run, task_id)
    events = Counter((e["action"], e["version"], e["outcome"]) for e in entries)
    assert all(count == 1 for count in events.values()), f"duplicate deployment entries: {events}"
    names = Counter(json.dumps({k: e.get(k) for k in ("action", "version", "outcome", "time")}) for e in
                    history(client, name))  # fmt: skip
    assert all(count == 1 for count in names.values()), names
    return entries


def assert_local_consistent(client, stack, port: int) -> str:
    """champion == the version the local endpoint serves == the last successful deployment."""
    version = assert_approved_champion(client, LOCAL_MODEL)
    served = local_served_version(port, sample_records(stack))
    last = last_succeeded(client, LOCAL_MODEL)
    assert (served, (last or {}).get("version")) == (version, version), history(client, LOCAL_MODEL)[-4:]
    return version


def assert_kserve_consistent(client, kube, name: str) -> str:
    """champion == the version the InferenceService serves (100% of its traffic) == the last success."""
    version = assert_approved_champion(client, name)
    last = last_succeeded(client, name)
    assert kserve_traffic(kube, name) == {version: 100}, (kserve_traffic(kube, name), version)
    assert (last or {}).get("version") == version, history(client, name)[-4:]
    return version


def assert_snapshots(stack, name: str, expected: int) -> None:
    """One snapshot folder (with its manifest) per distinct input, and nothing half-written beside them."""
    folder = stack.data_root / "datasets" / name
    entries = sorted(p.name for p in folder.iterdir())
    snapshots = [p for p in folder.iterdir() if not p.name.startswith(".")]
    assert all((p / "_manifest.json").exists() for p in snapshots), entries
    assert len(snapshots) == expected, entries
    assert [e for e in entries if e.startswith(".")] == [], f"orphan staging folders: {entries}"


def assert_one_version_per_training_run(client, name: str) -> None:
    runs = Counter(mv.run_id for mv in client.search_model_versions(f"name = '{name}'") if mv.run_id)
    assert all(count == 1 for count in runs.values()), f"versions per training run: {runs}"


#: Kill points after which the version was already verified: the retry only records.
VERIFIED_BEFORE = {"release.record"}


def assert_verified_retry(stack, run: KilledRun, task_id: str, entry: dict) -> None:
    """
    The killed deploy was verified after its switch: by the retry (its log shows the smoke test), or, when
    killed after verification (``record``), by the first try, whose log shows it before the kill.
    """
    assert entry["outcome"] == "succeeded", entry
    assert (entry.get("verify") or {}).get("sample_data"), entry
    try_number = 1 if run.kills[task_id] in VERIFIED_BEFORE else 2
    log = task_log(stack, run, task_id, try_number)
    assert SMOKE.search(log), f"try {try_number} of {task_id} ran no smoke test:\n{log[-3000:]}"


# -- the training path ---------------------------------------------------------------------------------------


def check_training_run(f: Findings, stack, client, port: int, snapshots: int) -> str:
    run = f.run
    f.killed_and_retried(stack)
    version = str(stack.xcom(TRAINING, run.run_id, "register")["version"])
    with f.check("ingest", "one snapshot per input, no orphan staging folder"):
        assert_snapshots(stack, LOCAL_MODEL, snapshots)
    with f.check("register", "one model version per training run"):
        assert_one_version_per_training_run(client, LOCAL_MODEL)
    with f.check("evaluate", "gate decision and summary on the version"):
        tags = client.get_model_version(LOCAL_MODEL, version).tags
        assert tags.get("mlops.evaluation.summary"), tags
        assert tags.get("mlops.gate.decision") == "passed", tags
    with f.check("approve", "approval recorded once the reviewer answered"):
        tags = client.get_model_version(LOCAL_MODEL, version).tags
        assert tags.get("mlops.approval.approver") == "reviewer", tags
        assert run.approvals == 1, f"the reviewer was asked {run.approvals} times"
    for task_id in ("promote", "deploy"):
        with f.check(task_id, "champion == served == last successful deployment"):
            assert assert_local_consistent(client, stack, port) == version
    with f.check("deploy", "one history entry; the retry ran the smoke test"):
        (entry,) = assert_one_entry_per_event(client, LOCAL_MODEL, run, "deploy")
        assert_verified_retry(stack, run, "deploy", entry)
    return version


def check_nothing_left_running(f: Findings, stack) -> None:
    """The trainer and the sandbox of the killed first tries stopped with their task processes."""
    from airflow_mlops.serving.local import port_is_free

    run = f.run
    with f.check("train", "the killed try's trainer is not running"):
        (pid,) = logged_numbers(task_log(stack, run, "train", 1), r"Trainer started \(pid (\d+)")
        assert not process_running(pid, "tests.kill.trainer"), f"trainer pid {pid} of try 1 still runs"
    with f.check("infra_validate", "the killed try's sandbox is stopped, its port free, its record gone"):
        log = task_log(stack, run, "infra_validate", 1)
        port, pid = logged_numbers(log, r"serves at http://127\.0\.0\.1:(\d+) \(pid (\d+)\)")
        assert not process_running(pid, "models serve"), f"sandbox pid {pid} of try 1 still runs"
        assert port_is_free("127.0.0.1", port), f"port {port} of the sandbox of try 1 is still taken"
        records = stack.data_root / "serving" / LOCAL_MODEL / "sandboxes"
        assert sorted(p.name for p in records.glob("*.json")) == []


def test_training_path_survives_a_kill_in_every_task(stack, client, serving_port, state, results):
    kills = {
        "ingest": "ingest.published",
        "train": "train.running",
        "infra_validate": "infra_validate.serving",
        "register": "register.created",
        "evaluate": "evaluate.logged",
        "approve": "approve.recorded",
        "promote": "promote.tagged",
        "deploy": "release.switch",
    }
    run = run_with_kills(stack, TRAINING, {"model_name": LOCAL_MODEL}, kills, approve_task="approve")

    assert run.state == "success", run.describe()
    f = Findings(results, run)
    state["v1"] = check_training_run(f, stack, client, serving_port, snapshots=1)
    check_nothing_left_running(f, stack)
    f.finish()


def test_training_path_survives_a_kill_at_the_other_step_boundaries(
    stack, client, serving_port, state, results
):
    # New data, so that ingest writes a new snapshot (and is killed while writing it).
    data = make_demo_data(stack.home / "incoming" / "customers-2.csv", rows=2400, seed=11)
    kills = {
        "ingest": "ingest.staged",
        "register": "register.aliased",
        "evaluate": "evaluate.gated",
        "promote": "promote.moved",
        "deploy": "release.verify",
    }
    conf = {"model_name": LOCAL_MODEL, "data_path": str(data)}
    run = run_with_kills(stack, TRAINING, conf, kills, approve_task="approve")

    assert run.state == "success", run.describe()
    f = Findings(results, run)
    state["v2"] = check_training_run(f, stack, client, serving_port, snapshots=2)
    state["holdout"] = stack.xcom(TRAINING, run.run_id, "ingest")["splits"]["holdout"]
    with f.check("deploy", "the history says which version served before"):
        entry = entries_of(client, LOCAL_MODEL, run, "deploy")[-1]
        assert entry["previous_version"] == state["v1"], entry
    f.finish()


# -- the release path: deploy on the local target, on KServe, as a KServe canary -----------------------------

#: Per round: (local version key or "" for the champion, KServe/canary version, kill point per task).
ROUNDS = [
    ("v1", "1", {"deploy_local": "release.planned", "deploy_kserve": "release.planned",
                 "deploy_canary": "release.switch"}),
    ("v2", "2", {"deploy_local": "release.record", "deploy_kserve": "release.switch",
                 "deploy_canary": "release.bake"}),
    ("", "3", {"deploy_kserve": "release.verify", "deploy_canary": "release.promote_canary"}),
    ("", "4", {"deploy_kserve": "release.record", "deploy_canary": "release.verify"}),
]  # fmt: skip


@pytest.fixture(scope="module")
def kserve_models(client, state):
    """Two models of five approved versions each, stored where KServe can read them (``s3://``)."""
    for name in (KSERVE_MODEL, CANARY_MODEL):
        client.create_registered_model(name)
        for i in range(1, 6):
            version = client.create_model_version(name, source=f"s3://models/{name}/{i}").version
            approve_version(client, name, version)
    return KSERVE_MODEL, CANARY_MODEL


@pytest.mark.parametrize(
    ("local", "version", "kills"), ROUNDS, ids=[f"round{i + 1}" for i in range(len(ROUNDS))]
)
def test_deploys_survive_a_kill_at_each_release_step(stack, client, kube, serving_port, state, kserve_models,
                                                     results, local, version, kills):  # fmt: skip
    assert "holdout" in state, "the training tests did not finish"
    before = len(kube.predictions)
    conf = {
        "local_model": LOCAL_MODEL,
        "local_version": state[local] if local else "",
        "kserve_version": version,
        "canary_version": version,
        "sample_data": state["holdout"],
    }
    run = run_with_kills(stack, RELEASE, conf, kills)

    f = Findings(results, run)
    with f.check("run", "the run succeeded"):
        assert run.state == "success", run.describe()
    f.killed_and_retried(stack)
    with f.check("deploy_local", "champion == served == last successful deployment"):
        assert assert_local_consistent(client, stack, serving_port) == (
            state[local] if local else state["v2"]
        )
    for task_id, model in (("deploy_kserve", KSERVE_MODEL), ("deploy_canary", CANARY_MODEL)):
        with f.check(task_id, "champion == served (100% of traffic) == last successful deployment"):
            assert assert_kserve_consistent(client, kube, model) == version
        with f.check(task_id, "the version answered the smoke test after the kill"):
            assert any(p["version"] == version for p in kserve_requests(kube, model, before)), model
    for task_id, model in (("deploy_local", LOCAL_MODEL), ("deploy_kserve", KSERVE_MODEL),
                           ("deploy_canary", CANARY_MODEL)):  # fmt: skip
        with f.check(task_id, "one history entry per event; the retry verified"):
            entries = assert_one_entry_per_event(client, model, run, task_id)
            succeeded = [e for e in entries if e["outcome"] == "succeeded"]
            assert len(succeeded) == 1, entries
            if task_id in kills:
                assert_verified_retry(stack, run, task_id, succeeded[0])
    if version != "1":  # the first deploy of a model has nothing to canary beside
        with f.check("deploy_canary", "the canary's history entry has its bake"):
            canary = entries_of(client, CANARY_MODEL, run, "deploy_canary")[-1]
            assert canary.get("bake", {}).get("requests", 0) > 0, f"the canary was not baked: {canary}"
    f.finish()


# -- rollback ------------------------------------------------------------------------------------------------

#: (version asked for, the version it must end on, kill point)
ROLLBACKS = [("", "3", "release.switch"), ("2", "2", "release.planned"), ("1", "1", "release.record")]


@pytest.mark.parametrize(("asked", "expected", "kill"), ROLLBACKS, ids=[k for *_, k in ROLLBACKS])
def test_a_killed_rollback_finishes_the_same_rollback(stack, client, kube, results, asked, expected, kill):
    serving = champion(client, KSERVE_MODEL)
    assert serving is not None
    assert serving != expected
    reason = f"kill-point test: {kill}"
    conf = {"model_name": KSERVE_MODEL, "version": asked, "reason": reason}
    run = run_with_kills(stack, ROLLBACK, conf, {"rollback": kill})

    f = Findings(results, run)
    with f.check("rollback", "the run succeeded"):
        assert run.state == "success", run.describe()
    f.killed_and_retried(stack)
    with f.check("rollback", f"serves the chosen version {expected}; champion and history agree"):
        assert assert_kserve_consistent(client, kube, KSERVE_MODEL) == expected
    with f.check("rollback", "one rollback entry, with the reason and who asked"):
        entries = assert_one_entry_per_event(client, KSERVE_MODEL, run, "rollback")
        (done,) = [e for e in entries if e["action"] == "rollback" and e["outcome"] == "succeeded"]
        assert (done["version"], done["reason"], done["actor"]) == (expected, reason, "admin"), done
    with f.check("rollback", "the version rolled away from carries the reason"):
        rolled_away = client.get_model_version(KSERVE_MODEL, serving).tags
        assert reason in rolled_away.get("mlops.rollback.reason", ""), rolled_away
    f.finish()
