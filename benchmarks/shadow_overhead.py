"""
What a shadow costs the users of a local endpoint: the endpoint proxy with capture on, with and without a shadow
that gets a copy of every request, side by side in front of the same ``mlflow models serve`` process.

A scikit-learn classifier (20 features) is served by ``mlflow models serve`` twice: the served version and its
shadow. Two endpoint proxies (:mod:`airflow_mlops.serving.proxy`) forward to the served version with capture on;
one of them also names the shadow (``percent`` 100) in its state file, so it mirrors every answered request to
it and captures the shadow's answers. Each run sends ``--requests`` one-row ``POST /invocations`` calls to each
proxy, interleaved, over keep-alive connections; the figures are the medians over ``--runs`` runs of each
side's median and p99, with their spread. On a machine with few cores the shadow's model server competes for
the CPU with the served one: that cost is part of the figure.

    python benchmarks/shadow_overhead.py [--runs 9] [--requests 400] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from endpoint_timing import (  # noqa: E402
    REPO,
    bodies,
    p99,
    save_model,
    start_model_server,
    stop,
    timed_round,
    wait,
)

from airflow_mlops.serving.capture import check_capture_settings, read_captures, traffic_kind  # noqa: E402
from airflow_mlops.serving.local import free_port  # noqa: E402
from airflow_mlops.serving.replay import SHADOW  # noqa: E402


def start_proxy(folder: Path, name: str, state: dict) -> tuple[subprocess.Popen, int]:
    """An endpoint proxy for the state file *state*."""
    path = folder / name / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(state))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.serving.proxy", "--port", str(port), "--state", str(path)],
        stderr=open(folder / f"{name}.log", "wb"),  # noqa: SIM115
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))},
    )  # fmt: skip
    wait(port, "/_mlops/proxy", proc)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--markdown", help="append the result table to this file")
    args = parser.parse_args()

    procs: list[subprocess.Popen] = []
    results: dict[str, list[tuple[float, float]]] = {"no shadow": [], "shadow": []}
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        folder = Path(tmp)
        model = save_model(folder)
        try:
            (folder / "served").mkdir()
            (folder / "shadowed").mkdir()
            served, served_port = start_model_server(folder / "served", model)
            procs.append(served)
            shadow, shadow_port = start_model_server(folder / "shadowed", model)
            procs.append(shadow)
            server = {"host": "127.0.0.1", "port": served_port, "version": "1"}
            sides = {}
            for name, extra in (
                ("no shadow", {}),
                (
                    "shadow",
                    {"shadow": {"host": "127.0.0.1", "port": shadow_port, "version": "2", "percent": 100}},
                ),
            ):
                capture = check_capture_settings({"uri": str(folder / name.replace(" ", "-") / "store")})
                proc, port = start_proxy(
                    folder, name.replace(" ", "-"),
                    {"model_name": "bench", "server": server, "capture": capture, **extra},
                )  # fmt: skip
                procs.append(proc)
                sides[name] = port
            for run in range(args.runs + 1):  # the first run warms every side up and is not counted
                times = timed_round(sides, bodies(args.requests, seed=run + 1))
                if run:
                    for side in sides:
                        results[side].append((statistics.median(times[side]), p99(times[side])))
                    print(
                        f"run {run}: median {results['no shadow'][-1][0]:.2f} / {results['shadow'][-1][0]:.2f} ms,"
                        f" p99 {results['no shadow'][-1][1]:.2f} / {results['shadow'][-1][1]:.2f} ms",
                        flush=True,
                    )
            time.sleep(1.0)  # the last copies reach the shadow
            for proc in procs[2:]:
                proc.terminate()  # the proxies write what they captured
                proc.wait(timeout=30)
            now = datetime.now(UTC)
            mirrored = len(
                read_captures(
                    str(folder / "shadow" / "store"), "bench", now - timedelta(hours=2), now + timedelta(hours=1),
                    columns=[], traffic=traffic_kind(SHADOW, 200), version="2",
                )
            )  # fmt: skip
        finally:
            stop(procs)

    def summary(side: str, which: int) -> tuple[float, float, float]:
        values = [r[which] for r in results[side]]
        return statistics.median(values), min(values), max(values)

    pairs = list(zip(results["shadow"], results["no shadow"], strict=True))
    delta_median = [on[0] - off[0] for on, off in pairs]
    ratio_p99 = [on[1] / off[1] - 1 for on, off in pairs]
    sent = (args.runs + 1) * args.requests
    lines = [
        "",
        "## Shadow overhead",
        "",
        f"`python benchmarks/shadow_overhead.py --runs {args.runs} --requests {args.requests}`: one-row "
        "predictions of a 20-feature scikit-learn model served by `mlflow models serve`, through the endpoint "
        "proxy with capture on, without and with a shadow (a second `mlflow models serve` of the same model) "
        f"getting a copy of every request, interleaved over keep-alive connections; {args.runs} runs of "
        f"{args.requests} calls per side. Median over runs (min - max). Shadow answers captured: {mirrored} of "
        f"{sent}.",
        "",
        "| | no shadow | shadow (100%) | added |",
        "|---|---|---|---|",
        "| median (ms) | {:.2f} ({:.2f} - {:.2f}) | {:.2f} ({:.2f} - {:.2f}) | {:+.2f} ms ({:+.2f} - {:+.2f}) |".format(
            *summary("no shadow", 0), *summary("shadow", 0), statistics.median(delta_median), min(delta_median),
            max(delta_median),
        ),
        "| p99 (ms) | {:.2f} ({:.2f} - {:.2f}) | {:.2f} ({:.2f} - {:.2f}) | {:+.1%} ({:+.1%} - {:+.1%}) |".format(
            *summary("no shadow", 1), *summary("shadow", 1), statistics.median(ratio_p99), min(ratio_p99),
            max(ratio_p99),
        ),
        "",
    ]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
