"""
How a training entrypoint is read: a module to run with ``python -m`` or a command line.

Plain Python, cheap to import: the training operator checks a literal entrypoint while the DAG is parsed.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence

_MODULE_RE = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"  # compiled (and cached by re) when first used


def parse_entrypoint(entrypoint: str | Sequence[str]) -> tuple[str | None, list[str]]:
    """
    Split *entrypoint* into ``(module, args)`` for a Python module, or ``(None, command)`` for a command list.

    Accepted forms: ``"pkg.module"``, ``"-m pkg.module [args...]"``, or a list of strings run as it is.

    :raises ValueError: if *entrypoint* is none of the accepted forms.
    """
    if isinstance(entrypoint, str):
        tokens = shlex.split(entrypoint)
        if len(tokens) >= 2 and tokens[0] == "-m" and re.fullmatch(_MODULE_RE, tokens[1]):
            return tokens[1], tokens[2:]
        if len(tokens) == 1 and re.fullmatch(_MODULE_RE, tokens[0]) and not tokens[0].endswith(".py"):
            return tokens[0], []
    elif isinstance(entrypoint, Sequence) and entrypoint and all(isinstance(t, str) for t in entrypoint):
        return None, list(entrypoint)
    raise ValueError(
        f"entrypoint {entrypoint!r} is not supported: give a Python module ('pkg.module'), "
        "'-m pkg.module [args...]' (both run with the worker's Python), or a command as a list of strings "
        "(['python', 'train.py', '--epochs', '3'])"
    )


def entrypoint_command(entrypoint: str | Sequence[str]) -> list[str]:
    """
    Return the command that starts *entrypoint* locally: a module runs with the worker's own Python.

    :raises ValueError: if *entrypoint* is none of the accepted forms.
    """
    module, args = parse_entrypoint(entrypoint)
    return [sys.executable, "-m", module, *args] if module else args
