"""
The local target's watchdog: runs one model server as its child and starts it again when it dies.

The local target starts ``python -m airflow_mlops.serving.supervisor --state FILE --url URL --max-restarts N
--window S -- <mlflow models serve ...>`` in a session of its own (the supervisor's pid is the ``server.pid``
of the state file, and stopping the server stops its process group). The supervisor:

- starts the model server (its parent-death signal set, so it never outlives the supervisor) and waits until
  ``URL`` (``GET /ping``) answers; a server that exits before it ever answered is not started again: the
  supervisor exits with the server's code, and the deploy reports the server's log;
- once the server has answered, a server that dies (killed, crashed) is started again on the same loopback
  port, so the endpoint proxy needs no change: at most N times in any S seconds, counting the restarts the
  local target made itself (``restarts`` in the state file). Each restart is logged (the server log) and
  appended to ``restarts`` of the state file, under the target's lock; past the bound the supervisor exits
  and the model stays down (``health()`` says why) until the next deploy;
- on SIGTERM stops the server and exits.

Standard library only (and psutil, which Airflow installs): it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_mlops.utils.processes import set_parent_death_signal

#: Exit code of a supervisor that stopped restarting its server (the restart bound was reached).
GAVE_UP = 4
_POLL_SECONDS = 0.5
_STOP_GRACE_SECONDS = 10.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _log(message: str) -> None:
    sys.stderr.write(f"{_now()} supervisor: {message}\n")
    sys.stderr.flush()


def recent_restarts(restarts: list[dict[str, Any]], window: float, now: datetime | None = None) -> int:
    """How many of *restarts* (entries with an ISO ``time``) fall within the last *window* seconds."""
    since = (now or datetime.now(UTC)) - timedelta(seconds=window)
    count = 0
    for entry in restarts:
        try:
            if datetime.fromisoformat(str(entry.get("time"))) >= since:
                count += 1
        except (TypeError, ValueError):
            continue
    return count


class Supervisor:
    """One model server, started again within the bound when it dies."""

    def __init__(self, command: list[str], state: Path, url: str, max_restarts: int, window: float) -> None:
        self.command, self.state, self.url = command, state, url
        self.max_restarts, self.window = max_restarts, window
        self.child: subprocess.Popen[bytes] | None = None

    # -- the state file (shared with the local target, written under its lock) ------------------------

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def _mine(self, state: dict[str, Any] | None) -> bool:
        server = (state or {}).get("server") or {}
        return int(server.get("pid") or 0) == os.getpid()

    def restarts(self) -> list[dict[str, Any]]:
        return list((self._read_state() or {}).get("restarts") or [])

    def record_restart(self, entry: dict[str, Any]) -> None:
        """Append *entry* to ``restarts`` of the state file, if the state still names this supervisor."""
        import fcntl

        with open(self.state.parent / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read_state()
                if not self._mine(state):
                    return  # replaced by a deploy meanwhile: the new state is not ours to change
                assert state is not None
                state["restarts"] = [*(state.get("restarts") or []), entry][-50:]
                state["updated_at"] = _now()
                fd, tmp = tempfile.mkstemp(prefix=".state.", dir=self.state.parent)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(state, fh, indent=2, sort_keys=True)
                os.replace(tmp, self.state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- the child ------------------------------------------------------------------------------------

    def start(self) -> subprocess.Popen[bytes]:
        self.child = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, preexec_fn=set_parent_death_signal, close_fds=True
        )
        _log(f"model server started (pid {self.child.pid}): {' '.join(self.command[:6])} ...")
        return self.child

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1.0) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_until_serving(self, first: bool) -> int | None:
        """
        Wait until the child serves (None) or exits (its exit code).

        It serves once it answers. The first server also serves once the state file names this supervisor:
        the local target writes that after its own check that the server answered.
        """
        assert self.child is not None
        while True:
            code = self.child.poll()
            if code is not None:
                return None if first and self._mine(self._read_state()) else code
            if (first and self._mine(self._read_state())) or self._answers():
                return None
            time.sleep(_POLL_SECONDS)

    def _group(self) -> list[Any]:
        """The live processes of this process group but the supervisor (the server and its workers)."""
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - Airflow installs psutil
            return []
        me, group = os.getpid(), os.getpgid(0)
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.pid != me and os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (OSError, psutil.Error):
                continue
        return found

    def _kill_leftovers(self) -> None:
        """Stop what the dead server left in this process group (its workers), so the port is free."""
        for proc in self._group():
            with contextlib.suppress(Exception):
                proc.kill()

    def stop(self, *_: Any) -> None:
        """SIGTERM: stop the server and its workers (SIGKILL what is left after the grace period) and exit."""
        for proc in self._group():  # the workers too: the server does not always pass the signal on
            with contextlib.suppress(Exception):
                proc.terminate()
        # Polled with os.waitpid, not child.wait(): the handler may run inside the main loop's child.wait(),
        # whose lock a nested wait cannot take, so it would sleep out the grace period after the server exited.
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if self.child is not None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.child.pid, os.WNOHANG)
            if not self._group():
                break
            time.sleep(0.05)
        self._kill_leftovers()
        raise SystemExit(0)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        self.start()
        code = self.wait_until_serving(first=True)
        if code is not None:
            _log(f"model server exited with code {code} before it answered {self.url}; not started again")
            return code
        _log(f"model server serves {self.url}")
        while True:
            assert self.child is not None
            code = self.child.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self._kill_leftovers()
            recent = recent_restarts(self.restarts(), self.window)
            if recent >= self.max_restarts:
                _log(
                    f"model server (pid {self.child.pid}) {how}; NOT started again: {recent} restarts in the "
                    f"last {self.window:g} s (max_restarts {self.max_restarts}); the next deploy starts it"
                )
                return GAVE_UP
            _log(
                f"model server (pid {self.child.pid}) {how}; starting it again "
                f"(restart {recent + 1} of at most {self.max_restarts} in {self.window:g} s)"
            )
            old = self.child.pid
            self.record_restart(
                {"time": _now(), "by": "supervisor", "reason": f"model server pid {old} {how}"}
            )
            self.start()
            code = self.wait_until_serving(first=False)
            if code is not None:
                continue  # died again while starting: counted as the next restart, within the bound
            _log(f"model server answers {self.url} again")


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_mlops.serving.supervisor --state FILE --url URL [...] -- COMMAND...``."""
    import argparse  # here, not at the top: serving.local imports this module when a DAG file is parsed

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        sys.stderr.write(
            "usage: supervisor --state FILE --url URL --max-restarts N --window S -- COMMAND...\n"
        )
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--max-restarts", type=int, default=3)
    parser.add_argument("--window", type=float, default=600.0)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    return Supervisor(command, Path(args.state), args.url, args.max_restarts, args.window).run()


if __name__ == "__main__":
    sys.exit(main())
