"""Child processes that do not outlive their parent: the Linux parent-death signal."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """
    Ask Linux to send *sig* to this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``).

    For ``subprocess.Popen(preexec_fn=...)``: the child of a parent killed without warning (SIGKILL, OOM) stops
    instead of running on as an orphan. A no-op where there is no ``prctl`` (not Linux). The signal follows the
    parent *thread*: start the child from a thread that lives as long as the child should.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
