"""Running the ``airflow-mlops`` command as a user would from another shell, against a live stack."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_mlops.demo.stack import LocalStack

#: How long ``approve|reject`` may wait for the task to take the answer; a busy 2-core machine is slow.
WAIT_TIMEOUT = "300"


def run_cli(
    stack: LocalStack, *args: str, password: str | None = None, url: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow-mlops ARGS``; the password (``reviewer``'s unless given) comes from the environment."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MLOPS_AIRFLOW_")}
    environ["MLOPS_AIRFLOW_PASSWORD"] = password or stack.passwords["reviewer"]
    environ.update(env)
    if args[:1] in (("approve",), ("reject",)) and "--no-wait" not in args:
        args = (*args, "--wait-timeout", WAIT_TIMEOUT)
    return subprocess.run(
        [sys.executable, "-m", "airflow_mlops.cli", *args, *(["--url", stack.airflow_url] if url else [])],
        env=environ, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
