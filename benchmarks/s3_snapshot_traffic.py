"""
Bytes through the worker when snapshotting one large S3 Parquet object into an S3 snapshot root.

Starts an S3-compatible server (moto) on loopback, uploads a Parquet object of ``--mib`` MiB of random
doubles, and runs ``IngestDatasetOperator`` twice: the server-side copy path (default) and, for comparison,
``server_side_copy=False`` (download, read, rewrite, upload). Every HTTP response and request the worker's
S3 client handles is counted (``after-call``: the streamed Content-Length of GetObject bodies and the
read body of every other response, for received bytes; ``request-created`` body length for sent bytes), so the numbers are what crosses the worker's network interface, headers excluded.

    python benchmarks/s3_snapshot_traffic.py [--mib 96] [--markdown docs/benchmarks-data.md]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Counter:
    def __init__(self, client) -> None:
        self.received = 0
        self.sent = 0
        self.calls: dict[str, int] = {}
        client.meta.events.register("after-call.s3", self._after)
        client.meta.events.register("request-created.s3", self._request)

    def _after(self, http_response, model, **_) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1
        if model.has_streaming_output:  # GetObject: the caller reads Content-Length body bytes
            self.received += int(http_response.headers.get("content-length") or 0)
        else:  # already read; empty for HEAD (whose Content-Length is the object's size)
            self.received += len(http_response.content or b"")

    def _request(self, request, **_) -> None:
        body = request.body
        if isinstance(body, bytes | bytearray):
            self.sent += len(body)
        elif hasattr(body, "seek") and hasattr(body, "tell"):
            position = body.tell()
            body.seek(0, os.SEEK_END)
            self.sent += body.tell() - position
            body.seek(position)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=96, help="size of the Parquet object in MiB")
    parser.add_argument(
        "--markdown", help="write the results as the first section of this Markdown page, keeping its others"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))
    os.environ.setdefault("AIRFLOW__MLOPS__ALLOWED_SOURCES", "s3://bench/raw")  # the only source read here
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    server = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
            {"conn_type": "aws", "login": "testing", "password": "testing",
             "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        )  # fmt: skip
        results = run(args.mib)
        print(json.dumps(results), file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.markdown:
        path = Path(args.markdown)
        path.write_text(with_section(path.read_text() if path.exists() else "", markdown(results)))


def with_section(page: str, ours: str) -> str:
    """*ours* (the page heading and this benchmark's section) followed by *page*'s other ``## `` sections."""
    heading = ours.split("\n## ", 1)[1].splitlines()[0]
    others = [part for part in page.split("\n## ")[1:] if part.splitlines()[0] != heading]
    return "\n## ".join([ours.rstrip("\n") + "\n", *others]).rstrip("\n") + "\n"


def run(mib: int) -> dict:
    import boto3
    import numpy as np
    import pandas as pd
    from botocore.config import Config

    from airflow_mlops.operators.ingest import IngestDatasetOperator

    rows = mib * (1 << 20) // 8
    buffer = io.BytesIO()
    pd.DataFrame({"x": np.random.default_rng(0).random(rows)}).to_parquet(
        buffer, index=False, compression=None
    )
    body = buffer.getvalue()
    admin = boto3.client(
        "s3", endpoint_url=json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"],
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        config=Config(read_timeout=900, retries={"max_attempts": 5}),  # a 1 GiB PUT on a busy machine
    )  # fmt: skip
    admin.create_bucket(Bucket="bench")
    admin.put_object(Bucket="bench", Key="raw/big.parquet", Body=body)
    del buffer

    results = {"object_bytes": len(body), "rows": rows, "runs": {}}
    for label, server_side in (("server-side copy", True), ("download + rewrite + upload", False)):
        op = IngestDatasetOperator(
            task_id="ingest", dataset_name="big", source="s3://bench/raw/big.parquet",
            data_root=f"s3://bench/{'copy' if server_side else 'rewrite'}", server_side_copy=server_side,
        )  # fmt: skip
        counter = Counter(op.hook.storage.s3)
        start = time.perf_counter()
        try:
            result = op.execute(context={})
        except Exception as err:  # the comparison path can exhaust the stand-in server; record, go on
            results["runs"][label] = {"error": f"{type(err).__name__}: {err}"[:300]}
            continue
        seconds = time.perf_counter() - start
        assert result["rows"] == rows
        results["runs"][label] = {
            "received_bytes": counter.received,
            "sent_bytes": counter.sent,
            "seconds": round(seconds, 2),
            "calls": dict(sorted(counter.calls.items())),
        }
    return results


def markdown(results: dict) -> str:
    lines = [
        "# Data benchmarks",
        "",
        "## S3 to S3 snapshot of one large Parquet object",
        "",
        "Command: `python benchmarks/s3_snapshot_traffic.py --mib 1024` (S3 is a local moto server; the",
        "worker's S3 client is the Amazon provider's `S3Hook` client of the `aws_default` connection; bytes are",
        "HTTP bodies that client received and sent).",
        "",
        f"Object: {results['object_bytes'] / (1 << 20):.1f} MiB, {results['rows']:,} rows.",
        "",
        "| path | received by the worker | sent by the worker | seconds | S3 calls |",
        "|---|---|---|---|---|",
    ]
    for label, run in results["runs"].items():
        if "error" in run:
            lines.append(f"| {label} | failed: {run['error']} | | | |")
            continue
        calls = ", ".join(f"{name} x{count}" for name, count in run["calls"].items())
        lines.append(
            f"| {label} | {run['received_bytes']:,} B | {run['sent_bytes']:,} B | {run['seconds']} | {calls} |"
        )
    lines += [
        "",
        "The server-side copy reads only the Parquet footer (ranged GETs) and writes only the manifest; the",
        "object itself is copied by the store (`CopyObject`, or `UploadPartCopy` parts above the multipart",
        "threshold). Timings are from a shared 2-core machine and only indicative; the byte counts are exact.",
        "",
    ]
    copy = results["runs"].get("server-side copy", {})
    if "received_bytes" in copy:
        total = copy["received_bytes"] + copy["sent_bytes"]
        verdict = "met" if total <= 100_000 else "NOT met"
        lines += [
            f"Through the worker on the server-side copy path: {total:,} B in all (target <= 100 kB: {verdict}).",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
