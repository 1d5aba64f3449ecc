"""
The fault injector itself: every kill point marks a function that exists, and an armed task process dies
by SIGKILL at its kill point in the first try only, leaving its marker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.kill.faults import KILL_POINTS, RELEASE_ADVANCE, add_to_plan, fired_marker, read_plan
from tests.kill.support import REPO

#: A task process in miniature: arm for try argv[1], then call the function of kill point ingest.staged.
CHILD = """
import sys
from pathlib import Path
from types import SimpleNamespace

import airflow_mlops.data.snapshots as snapshots
from tests.kill.faults import arm

arm({"ti": SimpleNamespace(dag_id="d", run_id="r", task_id="t", try_number=int(sys.argv[1]))})
snapshots.write_parquet({}, Path(sys.argv[2]))
print("returned")
"""


@pytest.mark.parametrize("name", sorted(KILL_POINTS))
def test_every_kill_point_marks_a_function_that_exists(name):
    hook = KILL_POINTS[name].hook()

    assert hook.resolve() is not None
    if name.startswith("release."):
        # The release steps are marked by the release record, not by the fallbacks.
        assert hook.where == RELEASE_ADVANCE


def test_the_plan_names_known_kill_points_only(tmp_path):
    plan = tmp_path / "plan.json"
    add_to_plan(plan, "d", "r", {"t": "ingest.staged"})

    assert read_plan(plan) == {"d/r": {"t": "ingest.staged"}}
    with pytest.raises(ValueError, match="unknown kill points"):
        add_to_plan(plan, "d", "r2", {"t": "ingest.nowhere"})


@pytest.mark.parametrize(("try_number", "killed"), [(1, True), (2, False)])
def test_an_armed_process_dies_by_sigkill_in_its_first_try_only(tmp_path, try_number, killed):
    plan = tmp_path / "plan.json"
    add_to_plan(plan, "d", "r", {"t": "ingest.staged"})
    env = {**os.environ, "MLOPS_KILL_PLAN": str(plan)}

    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(try_number), str(tmp_path / "out")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    marker = fired_marker(plan, "d", "r", "t")
    if killed:
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert "returned" not in done.stdout
        assert json.loads(marker.read_text())["kill_point"] == "ingest.staged"
        assert (tmp_path / "out").is_dir()  # killed right after the function ran
    else:
        assert done.returncode == 0, done.stderr
        assert "returned" in done.stdout
        assert not marker.exists()
