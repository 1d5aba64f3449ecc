"""
What the local endpoint adds to a prediction: ``mlflow models serve`` called directly and through the local
target's endpoint proxy (capture off and on), over keep-alive connections and a new connection per request.

A scikit-learn classifier (20 features, the model of ``capture_overhead.py``) is served by one ``mlflow models
serve`` process; two endpoint proxies (:mod:`airflow_mlops.serving.proxy`) forward to it, one capturing. Each
round sends ``--requests`` one-row ``POST /invocations`` calls per path (direct, proxy, proxy with capture) and
connection mode, interleaved request by request in a rotating order, and takes each path's median and 99th
percentile; the figures are the medians over ``--rounds`` rounds (the first, a warm-up, not counted), with their
spread. A round's p99 is its third-worst call of 300, so the p99 is also taken over all the counted rounds'
calls of a path pooled (2700 calls: the 27th-worst), the proxy's against the direct call's, with a 95% interval
from a paired bootstrap (each resample draws requests, a request's calls on both paths together: they were
sent moments apart, so the machine's busy moments stay shared). With ``--nginx`` the calls also go through nginx
set up as the same reverse proxy (a reference for what one hop costs on the machine, not a part of the
package). Then the throughput: ``--clients`` threads, each on its own keep-alive connection, call one path for
``--seconds`` seconds, direct and through the proxy alternating, ``--rounds`` times.

Target: the proxy adds at most 0.5 ms to the median and 10% to the p99 of the direct call, keep-alive and new
connections, capture on and off; the p99 is judged on the pooled figure.

    python benchmarks/serving_latency.py [--rounds 9] [--requests 300] [--nginx] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from endpoint_timing import (  # noqa: E402
    MODES,
    bodies,
    call,
    p99,
    save_model,
    spread,
    start_model_server,
    start_nginx,
    start_proxy,
    stop,
    timed_round,
)

from airflow_mlops.serving.capture import check_capture_settings  # noqa: E402

PATHS = ("direct", "proxy", "proxy+capture")
#: Bootstrap resamples of the pooled p99.
RESAMPLES = 2000


def pooled_added_p99(direct: list[float], through: list[float]) -> tuple[float, float, float]:
    """
    How much higher the p99 of *through* is than that of *direct* (a fraction), with its 95% interval.

    *direct*\[i] and *through*\[i] are the same request sent to both paths moments apart; the bootstrap
    resamples these pairs.
    """
    import numpy as np
    from scipy.stats import bootstrap

    def added(d: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.percentile(t, 99, axis=axis) / np.percentile(d, 99, axis=axis) - 1

    pair = (np.asarray(direct), np.asarray(through))
    interval = bootstrap(
        pair, added, paired=True, vectorized=True, n_resamples=RESAMPLES, batch=250,
        method="percentile", rng=np.random.default_rng(0),
    ).confidence_interval  # fmt: skip
    return float(added(*pair)), float(interval.low), float(interval.high)


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """User and system CPU seconds process *pid* has used (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def throughput(port: int, clients: int, seconds: float, payloads: list[bytes]) -> float:
    """Requests per second that *clients* threads, each on a keep-alive connection, get answered."""
    counts = [0] * clients
    until = time.perf_counter() + seconds

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        index = slot
        while time.perf_counter() < until:
            call(conn, payloads[index % len(payloads)])
            counts[slot] += 1
            index += clients
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=300, help="requests per path and mode in a round")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one throughput measurement")
    parser.add_argument("--proxy-module", default="airflow_mlops.serving.proxy", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", help="append the result table to this file")
    parser.add_argument("--nginx", action="store_true", help="also time nginx as the same reverse proxy")
    args = parser.parse_args()
    paths = (*PATHS, "nginx") if args.nginx else PATHS

    # (mode, path) -> one (median, p99) per counted round
    results: dict[tuple[str, str], list[tuple[float, float]]] = {(m, p): [] for m in MODES for p in paths}
    # (mode, path) -> every counted call's milliseconds, in the same request order on every path
    pooled: dict[tuple[str, str], list[float]] = {(m, p): [] for m in MODES for p in paths}
    load_before = os.getloadavg()[0]
    rates: dict[str, list[float]] = {"direct": [], "proxy": []}
    procs = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        folder = Path(tmp)
        server, backend = start_model_server(folder, save_model(folder))
        procs.append(server)
        try:
            capture = check_capture_settings({"uri": str(folder / "store")})
            off, off_port = start_proxy(folder, "off", backend, None, args.proxy_module)
            procs.append(off)
            on, on_port = start_proxy(folder, "on", backend, capture, args.proxy_module)
            procs.append(on)
            ports = {"direct": backend, "proxy": off_port, "proxy+capture": on_port}
            if args.nginx:
                nginx, ports["nginx"] = start_nginx(folder, backend)
                procs.append(nginx)
            payloads = bodies(args.requests, seed=1)
            proxy_pids = {"proxy": off.pid, "proxy+capture": on.pid}
            cpu_before: dict[str, tuple[float, float] | None] = {}
            for number in range(args.rounds + 1):  # round 0 warms every path up and is not counted
                if number == 1:
                    cpu_before = {path: cpu_seconds(pid) for path, pid in proxy_pids.items()}
                for mode in MODES if number % 2 else MODES[::-1]:
                    times = timed_round(ports, payloads, mode)
                    if number:
                        for path in paths:
                            results[(mode, path)].append((statistics.median(times[path]), p99(times[path])))
                            pooled[(mode, path)] += times[path]
                if number:
                    print(
                        f"round {number}: "
                        + "; ".join(
                            f"{mode} " + ", ".join(f"{p} {results[(mode, p)][-1][0]:.2f}" for p in paths)
                            for mode in MODES
                        )
                        + " ms (medians)",
                        flush=True,
                    )
            cpu_after = {path: cpu_seconds(pid) for path, pid in proxy_pids.items()}
            for number in range(args.rounds):
                for path in ("direct", "proxy") if number % 2 == 0 else ("proxy", "direct"):
                    rates[path].append(throughput(ports[path], args.clients, args.seconds, payloads))
                print(f"throughput round {number + 1}: direct {rates['direct'][-1]:.0f}/s, "
                      f"proxy {rates['proxy'][-1]:.0f}/s", flush=True)  # fmt: skip
        finally:
            stop(procs)
    load_after = os.getloadavg()[0]

    lines = [
        "",
        "## Serving latency",
        "",
        f"`python benchmarks/serving_latency.py --rounds {args.rounds} --requests {args.requests}`: one-row "
        "predictions of a 20-feature scikit-learn model served by `mlflow models serve` (one worker), called "
        "directly and through the local endpoint proxy with capture off and on, interleaved request by request; "
        f"{args.rounds} rounds of {args.requests} calls per path and connection mode. Median over rounds "
        "(min - max); *added*: the path's figure minus the direct call's in the same round (p99: as a ratio). "
        f"Load average (1 min) {load_before:.2f} before, {load_after:.2f} after."
        + (" *nginx*: nginx as the same reverse proxy (one worker, kept connections to the model server), "
           "for what one hop costs on this machine." if args.nginx else ""),
        "",
        "| connection | path | median (ms) | added to median (ms) | p99 (ms) | added to p99 |",
        "|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        direct = results[(mode, "direct")]
        for path in paths:
            rows = results[(mode, path)]
            if path == "direct":
                added_median = added_p99 = "-"
            else:
                added_median = spread([r[0] - d[0] for r, d in zip(rows, direct, strict=True)], "{:+.2f}")
                added_p99 = spread([r[1] / d[1] - 1 for r, d in zip(rows, direct, strict=True)], "{:+.1%}")
            lines.append(
                f"| {mode} | {path} | {spread([r[0] for r in rows])} | {added_median} | "
                f"{spread([r[1] for r in rows])} | {added_p99} |"
            )
    count = args.rounds * args.requests
    lines += [
        "",
        f"p99 over the {count} calls of all rounds pooled (about {count // 100} calls above it; a round's p99 "
        f"has about {args.requests // 100}); *added*: with its 95% interval, a paired bootstrap of {RESAMPLES} "
        "resamples:",
        "",
        "| connection | path | p99 pooled (ms) | added to p99 (95% interval) |",
        "|---|---|---|---|",
    ]
    for mode in MODES:
        direct_calls = pooled[(mode, "direct")]
        lines.append(f"| {mode} | direct | {p99(direct_calls):.2f} | - |")
        for path in paths[1:]:
            point, low, high = pooled_added_p99(direct_calls, pooled[(mode, path)])
            lines.append(
                f"| {mode} | {path} | {p99(pooled[(mode, path)]):.2f} | {point:+.1%} ({low:+.1%} - {high:+.1%}) |"
            )
    ratio = [p / d for p, d in zip(rates["proxy"], rates["direct"], strict=True)]
    calls = args.rounds * args.requests * len(MODES)
    used = {
        path: (after[0] - before[0], after[1] - before[1])
        for path in proxy_pids
        if (before := cpu_before.get(path)) is not None and (after := cpu_after.get(path)) is not None
    }
    if used:
        lines += [
            "",
            f"The proxy's own CPU per call (its process, over the {calls} counted calls): "
            + "; ".join(
                f"{path} {user / calls * 1e6:.0f} µs user, {system / calls * 1e6:.0f} µs system"
                for path, (user, system) in used.items()
            )
            + ".",
        ]
    lines += [
        "",
        f"Throughput, {args.clients} concurrent keep-alive clients, {args.rounds} alternating runs of "
        f"{args.seconds:g} s: direct {spread(rates['direct'], '{:.0f}')} requests/s, through the proxy "
        f"{spread(rates['proxy'], '{:.0f}')} requests/s (proxy / direct {spread(ratio, '{:.2f}')}).",
        "",
        "Target: the proxy adds at most 0.5 ms to the median and 10% to the p99 of the direct call (the "
        "pooled p99).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
