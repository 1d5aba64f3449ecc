"""
Worker-slot seconds of a release watch: time spent in the worker (``execute`` and ``execute_watched``) while
``WatchReleaseOperator`` watches a model served by the local target for N minutes under live traffic.

A real ``mlflow server`` process, a scikit-learn model served by ``mlflow models serve`` behind the endpoint
proxy with capture on, and a traffic generator sending one-row requests (``--rate`` per second) for the whole
window. ``execute`` runs in this interpreter, the trigger as the triggerer would, ``execute_watched`` on a fresh
operator object (tests/support/deferred.py). Because Airflow resumes a deferred task in a new process, the
import cost of the operator's resumption is measured separately in a fresh interpreter and added for the "cold"
figure. The target: worker seconds at most 2% of the window.

    python benchmarks/watch_slot_seconds.py [--minutes 10] [--rate 5] [--markdown docs/benchmarks.md]

``--markdown`` adds (or replaces) the section "Release watch: worker-slot seconds" of the page.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.slot_seconds import local_release, main  # noqa: E402 - first: an isolated AIRFLOW_HOME
from tests.support.context import context_for  # noqa: E402
from tests.support.deferred import Timing, run_deferred  # noqa: E402
from tests.support.traffic import Users  # noqa: E402

TARGET = 0.02
SECTION = "## Release watch: worker-slot seconds"
MODEL = "watch_benchmark"
#: What the watch's resumption imports besides airflow.sdk.
_IMPORTS = "mlflow, airflow_mlops.operators.watch, airflow_mlops.serving.release, airflow_mlops.serving.local"


def measure(minutes: float, rate: float) -> dict:
    from airflow_mlops.operators.deployment import DeployModelOperator
    from airflow_mlops.operators.watch import WatchReleaseOperator

    with local_release("watch-bench-") as release:
        (version,) = release.approved_versions(MODEL, 1)
        deploy = DeployModelOperator(
            task_id="deploy", model_name=MODEL, version=version, target=release.target,
            sample_data=release.holdout, drop_columns=["label"],
        )  # fmt: skip
        endpoint = deploy.execute(context_for(deploy, run_id=f"manual__{uuid.uuid4().hex[:8]}"))["endpoint"]
        window = minutes * 60

        def make():
            return WatchReleaseOperator(
                task_id="watch", model_name=MODEL, target=release.target, sample_data=release.holdout,
                drop_columns=["label"], watch={"window_seconds": window, "interval_seconds": 30, "min_requests": 10},
            )  # fmt: skip

        timing = Timing()
        with Users(endpoint, rate=rate) as users:
            started = time.monotonic()
            result = run_deferred(make, context_for(make(), run_id=f"manual__{uuid.uuid4().hex[:8]}"), timing)
            wall = time.monotonic() - started
    return {
        "minutes": minutes,
        "rate": rate,
        "sent": users.sent,
        "verdict": result["verdict"],
        "requests": result["measurements"]["requests"],
        "wall": wall,
        "worker": timing.worker,
        "triggerer": timing.triggerer,
        "deferrals": timing.deferrals,
    }


def markdown(figures: dict, cold: float) -> str:
    window = figures["minutes"] * 60
    warm = figures["worker"] / window
    cold_share = (figures["worker"] + cold) / window
    return "\n".join(
        [
            SECTION,
            "",
            f"`python benchmarks/watch_slot_seconds.py --minutes {figures['minutes']:g} --rate {figures['rate']:g}`: "
            f"`WatchReleaseOperator` watched a model served by the local target (`mlflow models serve` behind the "
            f"endpoint proxy, capture on) for {window:.0f} s while a generator sent {figures['sent']} one-row "
            f"requests ({figures['requests']} counted by the watch; verdict `{figures['verdict']}`). "
            f"Worker time (`execute` + `execute_watched`): **{figures['worker']:.2f} s**, "
            f"{warm:.3%} of the window; with a fresh process's imports for the resumption ({cold:.2f} s, median of "
            f"3): {cold_share:.3%} (target: at most {TARGET:.0%}). The trigger measured for {figures['triggerer']:.0f} s "
            f"in {figures['deferrals']} deferral; one run (one window: the figure is a bound, not a timing).",
            "",
        ]
    )


if __name__ == "__main__":
    main(__doc__.splitlines()[1], measure, markdown, _IMPORTS, SECTION)
