"""The KServe capture receiver as a real process on loopback, for the tests that need one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.conftest import free_port, stop_process, wait_for_http

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path


@dataclass(frozen=True)
class Receiver:
    url: str
    root: Path
    proc: subprocess.Popen


@contextmanager
def capture_receiver(
    base: Path,
    token: str,
    signatures: Mapping[str, Mapping[str, str]],
    flush_seconds: float = 600.0,
    max_body: int = 65536,
) -> Iterator[Receiver]:
    """
    ``python -m airflow_mlops.serving.capture_receiver`` for the models of *signatures* (model -> input columns),
    writing under ``base/root``, with *token* as its ``MLOPS_CAPTURE_TOKEN``; stopped on the way out.
    """
    base.mkdir(parents=True, exist_ok=True)
    root = base / "root"
    signature_file = base / "signatures.json"
    signature_file.write_text(json.dumps(signatures))
    port = free_port()
    models = [arg for model in signatures for arg in ("--model", model)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.serving.capture_receiver", "--port", str(port), "--root",
         str(root), *models, "--signatures", str(signature_file), "--flush-seconds", str(flush_seconds),
         "--max-body", str(max_body)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "MLOPS_CAPTURE_TOKEN": token},
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=60, proc=proc)
        yield Receiver(f"http://127.0.0.1:{port}", root, proc)
    finally:
        stop_process(proc)
