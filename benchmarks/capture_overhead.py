"""
What capturing predictions costs a local prediction call: the local target's endpoint proxy with capture on
and with capture off, side by side, in front of the same ``mlflow models serve`` process.

A scikit-learn classifier (20 features) is saved with MLflow and served by ``mlflow models serve``; two endpoint
proxies (:mod:`airflow_mlops.serving.proxy`) forward to it, one with a ``capture`` entry in its state file
(captures written to a temporary folder with the default batching), one without. Each run sends
``--requests`` one-row ``POST /invocations`` calls to each proxy, alternating, over keep-alive connections,
and takes the median and the 99th percentile of each side. The target: capture adds at most 1 ms to the
median and at most 5% to the p99. Figures are the medians over ``--runs`` runs, with their spread.

    python benchmarks/capture_overhead.py [--runs 9] [--requests 400] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from endpoint_timing import bodies, p99, save_model, start_model_server, start_proxy, stop, timed_round  # noqa: E402

from airflow_mlops.serving.capture import check_capture_settings, count_captures  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--markdown", help="append the result table to this file")
    args = parser.parse_args()

    procs = []
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        folder = Path(tmp)
        model = save_model(folder)
        server, backend = start_model_server(folder, model)
        procs.append(server)
        try:
            store = folder / "store"
            on, on_port = start_proxy(folder, "on", backend, check_capture_settings({"uri": str(store)}))
            off, off_port = start_proxy(folder, "off", backend, None)
            procs += [on, off]
            results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
            for run in range(args.runs + 1):  # the first run warms both sides up and is not counted
                times = timed_round({"on": on_port, "off": off_port}, bodies(args.requests, seed=run + 1))
                if run:
                    for side in ("on", "off"):
                        results[side].append((statistics.median(times[side]), p99(times[side])))
                    print(
                        f"run {run}: median off {results['off'][-1][0]:.2f} ms, on {results['on'][-1][0]:.2f} ms;"
                        f" p99 off {results['off'][-1][1]:.2f} ms, on {results['on'][-1][1]:.2f} ms",
                        flush=True,
                    )
            on.terminate()
            on.wait(timeout=30)
            from datetime import UTC, datetime, timedelta

            now = datetime.now(UTC)
            captured = count_captures(str(store), "bench", now - timedelta(hours=2), now + timedelta(hours=1))
        finally:
            stop(procs)

    def summary(side: str, which: int) -> tuple[float, float, float]:
        values = [r[which] for r in results[side]]
        return statistics.median(values), min(values), max(values)

    delta_median = [on[0] - off[0] for on, off in zip(results["on"], results["off"], strict=True)]
    ratio_p99 = [on[1] / off[1] - 1 for on, off in zip(results["on"], results["off"], strict=True)]
    expected = (args.runs + 1) * args.requests
    lines = [
        "",
        "## Prediction capture overhead",
        "",
        f"`python benchmarks/capture_overhead.py --runs {args.runs} --requests {args.requests}`: one-row "
        f"predictions of a 20-feature scikit-learn model served by `mlflow models serve`, through the endpoint "
        f"proxy with capture on and off, alternating; {args.runs} runs of {args.requests} calls per side. "
        f"Median over runs (min - max). Captured rows written: {captured} of {expected}.",
        "",
        "| | capture off | capture on | added |",
        "|---|---|---|---|",
        "| median (ms) | {:.2f} ({:.2f} - {:.2f}) | {:.2f} ({:.2f} - {:.2f}) | {:+.2f} ms ({:+.2f} - {:+.2f}) |".format(
            *summary("off", 0), *summary("on", 0), statistics.median(delta_median), min(delta_median),
            max(delta_median),
        ),
        "| p99 (ms) | {:.2f} ({:.2f} - {:.2f}) | {:.2f} ({:.2f} - {:.2f}) | {:+.1%} ({:+.1%} - {:+.1%}) |".format(
            *summary("off", 1), *summary("on", 1), statistics.median(ratio_p99), min(ratio_p99), max(ratio_p99),
        ),
        "",
        "Target: at most +1 ms on the median and +5% on the p99.",
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
