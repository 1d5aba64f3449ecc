"""The environment a child process (trainer, model server) starts from: only what it needs to run."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Variables copied from the worker into every child process; nothing else leaks through (no credentials).
BASE_ENV_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def base_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The set :data:`BASE_ENV_VARS` of *environ* (default: this process's environment) that are not empty."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in BASE_ENV_VARS if source.get(name)}
