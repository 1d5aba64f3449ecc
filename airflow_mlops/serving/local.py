"""
The embedded-default deploy target: ``mlflow models serve`` processes on this machine.

Layout of what the target manages, per registered model, under ``<state_dir>/<model_name>/``
(``state_dir`` defaults to ``<MLOPS_DATA_ROOT>/serving``):

- ``state.json``: ``{"endpoint", "proxy": {...}, "server": {"pid", "port", "version", "model_uri",
  "started_at", "log", ...}, "restarts": [...], "updated_at"}``; what a later task, or the rollback DAG, reads to
  find the server.
- ``logs/``: one log file per server process (and ``proxy.log``).
- ``lock``: serialises deploys of the same model.
- ``sandboxes/<port>.json``: one record per infra-validation sandbox, written before the sandbox starts and
  removed when it stops; the next sandbox of the model stops any recorded one whose task process is gone.
- ``capture-stats.json``: with ``capture`` on, the counts of the proxy's capture writer (rows captured and
  written, drops, failed writes; see :mod:`airflow_mlops.serving.capture`).

Clients call ``http://<host>:<port>`` (the *public* port). A small reverse proxy
(:mod:`airflow_mlops.serving.proxy`) listens there and forwards to the model server named in
``state.json``. A deploy starts the new version on a spare loopback port, waits until it answers
``GET /ping``, rewrites ``state.json`` (the proxy switches on the next request) and stops the old server: the
public port never changes and never goes dark, and a version that does not start never replaces one that
serves. Every process is started in a session of its own, so it outlives the Airflow task that started it.

A model server runs under a small watchdog (:mod:`airflow_mlops.serving.supervisor`) that starts it again on
the same port when it dies, and ``deploy()``, ``current()`` and ``health()`` start a server whose watchdog is
gone too: at most ``max_restarts`` restarts in ``restart_window`` seconds, each logged and recorded in
``restarts`` of the state file. A sandbox (infra validation) is never restarted, and dies with the task
process that started it (Linux parent-death signal).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# PortInUseError is also importable from here, where it was first defined.
from airflow_mlops.exceptions import (
    ConfigurationError,
    DeploymentError,
    DeploymentRejectedError,
    PortInUseError,
)
from airflow_mlops.registry import validate_model_name
from airflow_mlops.serving.base import DeployTarget
from airflow_mlops.serving.supervisor import recent_restarts
from airflow_mlops.utils.clock import utc_now, utc_now_iso
from airflow_mlops.utils.environment import base_environment
from airflow_mlops.utils.processes import set_parent_death_signal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from airflow_mlops.serving.status import Deployment, Health

#: Prefixes of the worker's variables a model server inherits when set, besides the base environment
#: (:func:`airflow_mlops.utils.environment.base_environment`) and the MLflow settings of the connection: the
#: standard credentials variables of artifact stores.
INHERITED_ENV_PREFIXES = ("AWS_", "MLFLOW_S3_", "GOOGLE_", "AZURE_", "STORAGE_EMULATOR_HOST")
#: Log files kept per model (the oldest are removed).
KEEP_LOGS = 20
#: Lines of a server's log quoted in an error message.
LOG_TAIL_LINES = 25
_STOP_GRACE_SECONDS = 15.0
_PROXY_STARTUP_SECONDS = 30.0
_LOOPBACK = "127.0.0.1"

log = logging.getLogger(__name__)

# Processes started by this Python process, so they can be reaped (no zombies) when they are stopped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _connect_host(host: str) -> str:
    return {"0.0.0.0": _LOOPBACK, "": _LOOPBACK, "::": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def proxy_limits() -> tuple[int, float]:
    """
    ``[mlops] serving_max_body_bytes`` and ``[mlops] serving_read_timeout``: the endpoint proxy's limits.

    :raises ConfigurationError: a value that is not more than 0 (checked before any process starts).
    """
    # The proxy's module is loaded when an endpoint starts, not when a DAG file that names the target is parsed.
    from airflow_mlops.serving.proxy import DEFAULT_MAX_BODY_BYTES, DEFAULT_READ_TIMEOUT
    from airflow_mlops.version_compat import conf

    max_body_bytes = conf.getint("mlops", "serving_max_body_bytes", fallback=DEFAULT_MAX_BODY_BYTES)
    read_timeout = conf.getfloat("mlops", "serving_read_timeout", fallback=DEFAULT_READ_TIMEOUT)
    for option, value in (("serving_max_body_bytes", max_body_bytes), ("serving_read_timeout", read_timeout)):
        if not value > 0:
            raise ConfigurationError(f"[mlops] {option} must be more than 0, got {value:g}")
    return max_body_bytes, read_timeout


def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether something could listen on *host*:*port* now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


#: Options of ``mlflow models serve`` the target sets itself, which ``server_args`` may not repeat (the last
#: occurrence wins): where the model server listens (always loopback behind the endpoint proxy), its port,
#: the model, and MLServer (which opens its own ports on every interface).
_OWNED_SERVER_OPTIONS: dict[str, str] = {
    "-h": "host", "--host": "host", "-p": "port", "--port": "port",
    "-m": "model", "--model-uri": "model", "--enable-mlserver": "mlserver",
}  # fmt: skip


def check_server_args(server_args: Sequence[str]) -> None:
    """
    Refuse ``server_args`` that set what the local target owns: the model server's address, port or model.

    Target settings can arrive as data (DAG params, XCom), so none of them may make a model server listen
    beyond loopback: the server always binds ``127.0.0.1``, and only the endpoint proxy listens on the
    target's ``host`` (a setting of its own, loopback unless the DAG says otherwise).

    :raises ValueError: naming the option and the setting to use instead.
    """
    for arg in server_args:
        option = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        what = _OWNED_SERVER_OPTIONS.get(option)
        if what is None:
            continue
        if what == "host":
            hint = (
                "the model server always listens on 127.0.0.1 behind the endpoint proxy; the address clients "
                "call is the target's own 'host' setting (default 127.0.0.1), set where the DAG builds the "
                "target"
            )
        elif what == "port":
            hint = "the model server gets a spare loopback port; the endpoint's port is the target's 'port' setting"
        elif what == "model":
            hint = "the model comes from the version being deployed"
        else:
            hint = "MLServer opens its own ports on every interface, beyond the local target's control"
        raise ValueError(f"server_args of the local target may not contain {arg!r}: {hint}.")


# -- processes ---------------------------------------------------------------------------------------------


def _create_time(pid: int) -> float | None:
    import psutil  # type: ignore[import-untyped]

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(info: Mapping[str, Any] | None) -> bool:
    """Whether the process recorded in *info* (``pid`` and ``create_time``) still runs (a reused pid is not)."""
    if not info or not info.get("pid"):
        return False
    pid = int(info["pid"])
    _reap(pid)
    created = _create_time(pid)
    return created is not None and abs(created - float(info.get("create_time") or 0)) < 1.0


def _spawn(
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path,
    preexec_fn: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Start *command* detached (own session, output to *log_path*) and return its identity."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            preexec_fn=preexec_fn,
        )
    _CHILDREN[proc.pid] = proc
    created = _create_time(proc.pid)
    return {"pid": proc.pid, "create_time": created or time.time(), "log": str(log_path)}


def _exited(info: Mapping[str, Any]) -> int | None:
    """Exit code of a process this Python process started, once it has exited; None while it runs."""
    child = _CHILDREN.get(int(info["pid"]))
    if child is not None:
        return child.poll()
    return None if process_alive(info) else -1


def terminate(info: Mapping[str, Any] | None, grace: float = _STOP_GRACE_SECONDS) -> None:
    """Stop the process group of the process recorded in *info*; SIGKILL it after *grace* seconds."""
    if not info or not info.get("pid"):
        return
    pid = int(info["pid"])
    created = _create_time(pid)
    if created is not None and abs(created - float(info.get("create_time") or 0)) >= 1.0:
        return  # the pid now belongs to another process: ours is long gone
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)  # the server is the leader of its own session, so pgid == pid
        except ProcessLookupError:
            _reap(pid)
            return
        except PermissionError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            child = _CHILDREN.get(pid)
            if child is not None:
                try:
                    child.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                _CHILDREN.pop(pid, None)
            else:
                _reap(pid)
            if not _group_alive(pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    import psutil

    # Only zombies left (children of a process that has not reaped them yet) count as gone.
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _listens(info: Mapping[str, Any], port: int) -> bool:
    """Whether the process recorded in *info* listens on TCP *port*."""
    import psutil

    try:
        connections = psutil.Process(int(info["pid"])).net_connections(kind="inet")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def _terminate_listener(port: int, model_name: str) -> None:
    """Stop the ``mlflow models serve`` process group that listens on loopback *port* for *model_name*."""
    import psutil

    if not port:
        return
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "models serve" not in cmdline or f"models:/{model_name}/" not in cmdline:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in proc.net_connections(kind="inet")):  # fmt: skip
                terminate({"pid": os.getpgid(proc.pid), "create_time": _create_time(os.getpgid(proc.pid))})
        except (OSError, psutil.Error):
            continue


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write *data* to *path* atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_tail(path: str | os.PathLike[str] | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last *lines* lines of a log file ("" if there is none)."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


def _get(url: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


# -- the target --------------------------------------------------------------------------------------------


class LocalServerTarget(DeployTarget):
    """
    Serve registered model versions with ``mlflow models serve`` on this machine (the embedded default).

    ``http://<host>:<port>`` is the model's endpoint: ``GET /ping``, ``POST /invocations`` with
    ``{"dataframe_records": [...]}``. It keeps serving after the Airflow task ends; its state is in
    ``<state_dir>/<model_name>/state.json``, where later tasks and the rollback DAG find it. One port serves
    one model: give each model its own port (:func:`~airflow_mlops.serving.ports.port_for_model` derives one
    from the name); a port that is another model's endpoint is refused with :class:`PortInUseError` (not
    retried). Model servers use the Python environment of the worker (``--env-manager local``). A model server
    that dies is started again (see the module's documentation), within ``max_restarts`` per
    ``restart_window``.

    :param port: Public port of the model's endpoint.
    :param host: Address the endpoint proxy listens on; keep the default (loopback) unless the machine is
        protected otherwise. The only setting that opens the endpoint beyond loopback: set it in the DAG,
        never from a parameter users fill in. The model servers behind the proxy always listen on loopback.
    :param state_dir: Where state and logs live; default ``<MLOPS_DATA_ROOT>/serving`` (a local directory).
    :param mlflow_conn_id: MLflow connection the servers load ``models:/`` URIs through; None uses
        ``MLFLOW_TRACKING_URI`` of the worker's environment.
    :param startup_timeout: Seconds a new server gets to answer ``GET /ping``.
    :param workers: Worker processes per server (``mlflow models serve -w``).
    :param server_args: Extra arguments for ``mlflow models serve`` (e.g. ``["--timeout", "120"]``); options the
        target sets itself (``-h``/``--host``, ``-p``/``--port``, ``-m``/``--model-uri``,
        ``--enable-mlserver``) are refused: the model server only ever listens on loopback.
    :param capture: Record every prediction the endpoint answers: ``True``, or settings like ``{"uri":
        "s3://bucket/root", "redact": ["email"]}`` (see
        :func:`airflow_mlops.serving.capture.check_capture_settings`); captures go to
        ``<uri or MLOPS_DATA_ROOT>/captures/model=<name>/hour=.../part-*.parquet``. None: no capture.
    :param max_restarts: How many times a dead model server is started again within ``restart_window``
        (by its watchdog, or by ``deploy``/``current``/``health``); past that it stays down until the next
        deploy. 0: never.
    :param restart_window: Seconds over which ``max_restarts`` counts.
    """

    kind = "local"

    def __init__(
        self,
        *,
        port: int = 5001,
        host: str = _LOOPBACK,
        state_dir: str | None = None,
        mlflow_conn_id: str | None = "mlflow_default",
        startup_timeout: float = 180.0,
        workers: int = 1,
        server_args: Sequence[str] | None = None,
        capture: bool | dict[str, Any] | None = None,
        max_restarts: int = 3,
        restart_window: float = 600.0,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port of the local target must be an integer from 1 to 65535, got {port!r}")
        if not isinstance(host, str) or not host or any(c in host for c in "/ "):
            raise ValueError(f"host of the local target must be an address like '127.0.0.1', got {host!r}")
        if state_dir is not None and (not isinstance(state_dir, str) or state_dir.startswith("s3://")):
            raise ValueError(f"state_dir of the local target must be a local directory, got {state_dir!r}")
        if not isinstance(startup_timeout, int | float) or startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be a positive number of seconds, got {startup_timeout!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if server_args is not None and (
            isinstance(server_args, str) or not all(isinstance(a, str) for a in server_args)
        ):
            raise ValueError(f"server_args must be a list of strings, got {server_args!r}")
        check_server_args(server_args or [])
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
        if (
            isinstance(restart_window, bool)
            or not isinstance(restart_window, int | float)
            or restart_window <= 0
        ):
            raise ValueError(f"restart_window must be a positive number of seconds, got {restart_window!r}")
        from airflow_mlops.serving.capture import check_capture_settings

        if capture is not None and capture is not False:
            check_capture_settings(capture, "capture setting of the local target")
        self.capture = None if capture is None or capture is False else capture
        self.port = port
        self.host = host
        self.state_dir = state_dir
        self.mlflow_conn_id = mlflow_conn_id
        self.startup_timeout = float(startup_timeout)
        self.workers = workers
        self.server_args = list(server_args or [])
        self.max_restarts = max_restarts
        self.restart_window = float(restart_window)

    def settings(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "host": self.host,
            "state_dir": self.state_dir,
            "mlflow_conn_id": self.mlflow_conn_id,
            "startup_timeout": self.startup_timeout,
            "workers": self.workers,
            "server_args": self.server_args,
            "capture": self.capture,
            "max_restarts": self.max_restarts,
            "restart_window": self.restart_window,
        }

    def capture_settings(self, model_uri: str | None = None) -> dict[str, Any] | None:
        """
        The complete capture settings (the root resolved), or None when capture is off.

        :param model_uri: The model being served: without a ``signature`` setting, its MLflow signature is
            what capture keeps (None, with a warning, when it cannot be read: every input column is kept).
        """
        from airflow_mlops.data.snapshots import resolve_data_root
        from airflow_mlops.serving.capture import check_capture_settings, signature_of

        if self.capture is None:
            return None
        settings = check_capture_settings(self.capture, "capture setting of the local target")
        settings["uri"] = resolve_data_root(settings["uri"])
        if model_uri is not None and settings["signature"] is None:
            try:
                settings["signature"] = signature_of(model_uri)
            except Exception as err:  # the artifact store's errors (credentials, network): no common type
                log.warning(
                    "Cannot read the signature of %s (%s: %s); capture keeps every input column",
                    model_uri, type(err).__name__, err,
                )  # fmt: skip
        return settings

    def capture_stats(self, model_name: str) -> dict[str, Any] | None:
        """The proxy's capture counts for *model_name* (None before its first write attempt)."""
        try:
            return json.loads((self.model_dir(model_name) / "capture-stats.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    @property
    def endpoint(self) -> str:
        """Base URL of the endpoint (the same for every model version)."""
        return f"http://{_url_host(_connect_host(self.host))}:{self.port}"

    # -- state ---------------------------------------------------------------------------------------------

    def state_root(self) -> Path:
        """Directory holding one sub-directory per model."""
        if self.state_dir:
            return Path(self.state_dir).expanduser().resolve()
        from airflow_mlops.data.snapshots import resolve_data_root

        root = resolve_data_root()
        if root.startswith("s3://"):
            raise DeploymentError(
                f"The local deploy target keeps its state on local disk, but MLOPS_DATA_ROOT is {root}: "
                "set state_dir in the target's settings to a local directory."
            )
        return Path(root) / "serving"

    def model_dir(self, model_name: str) -> Path:
        return self.state_root() / validate_model_name(model_name)

    def state_path(self, model_name: str) -> Path:
        """The state file of *model_name*."""
        return self.model_dir(model_name) / "state.json"

    def read_state(self, model_name: str) -> dict[str, Any] | None:
        """The state of *model_name*, or None if this target never served it (or stopped it)."""
        path = self.state_path(model_name)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as err:
            raise DeploymentError(
                f"State file {path} of model {model_name!r} is not valid JSON: {err}"
            ) from err
        return state if isinstance(state, dict) else None

    def _write_state(self, model_name: str, state: dict[str, Any]) -> None:
        path = self.state_path(model_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state, fh, indent=2, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _locked(self, model_name: str) -> Iterator[None]:
        import fcntl

        directory = self.model_dir(model_name)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _log_path(self, model_name: str, name: str) -> Path:
        logs = self.model_dir(model_name) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        old = sorted(logs.glob("server-*.log"), key=lambda p: p.stat().st_mtime)
        for path in old[: max(0, len(old) - KEEP_LOGS)]:
            path.unlink(missing_ok=True)
        return logs / name

    # -- processes -----------------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = base_environment()
        env.update(
            {k: v for k, v in os.environ.items() if k.startswith(INHERITED_ENV_PREFIXES) and v is not None}
        )
        # mlflow models serve starts uvicorn by name: the interpreter's own bin directory comes first.
        env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), env.get("PATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        if self.mlflow_conn_id:
            from airflow_mlops.hooks.mlflow import MLflowHook

            env.update(MLflowHook(mlflow_conn_id=self.mlflow_conn_id).child_env())
        else:
            env.update({k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")})
        return env

    def _start_server(
        self,
        model_name: str,
        version: str,
        model_uri: str,
        purpose: str,
        before_spawn: Callable[[int], None] | None = None,
        after_spawn: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """
        Start a model server on a spare loopback port and return once it answers ``GET /ping``.

        A ``sandbox`` runs alone and dies with this process (parent-death signal); any other server runs under
        its watchdog (:mod:`airflow_mlops.serving.supervisor`), detached. *before_spawn* gets the port before
        anything starts, *after_spawn* the process's identity before the wait.
        """
        port = free_port(_LOOPBACK)
        stamp = utc_now().strftime("%Y%m%dT%H%M%S")
        log_path = self._log_path(model_name, f"server-v{version}-{purpose}-{stamp}-{port}.log")
        check_server_args(self.server_args)
        url = f"http://{_LOOPBACK}:{port}/ping"
        command = [
            sys.executable, "-m", "mlflow", "models", "serve",
            "-m", model_uri, "-h", _LOOPBACK, "-p", str(port),
            "-w", str(self.workers), "--env-manager", "local", *self.server_args,
        ]  # fmt: skip
        env = self._env()
        preexec_fn: Callable[[], None] | None = set_parent_death_signal
        if purpose != "sandbox":
            preexec_fn = None
            command = [
                sys.executable, "-m", "airflow_mlops.serving.supervisor",
                "--state", str(self.state_path(model_name)), "--url", url,
                "--max-restarts", str(self.max_restarts), "--window", str(self.restart_window), "--", *command,
            ]  # fmt: skip
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")) if p
            )
        if before_spawn is not None:
            before_spawn(port)
        info = _spawn(command, log_path, env, cwd=self.model_dir(model_name), preexec_fn=preexec_fn)
        if after_spawn is not None:
            after_spawn(info)
        info.update(
            {
                "host": _LOOPBACK,
                "port": port,
                "version": version,
                "model_uri": model_uri,
                "started_at": utc_now_iso(),
            }
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = _exited(info)
            if code is not None:
                terminate(info)
                raise DeploymentError(
                    f"The model server for version {version} of model {model_name!r} ({model_uri}) exited "
                    f"with code {code} before serving. Nothing was changed. Server log ({log_path}):\n"
                    f"{log_tail(log_path)}"
                )
            try:
                status, _, _ = _get(url, timeout=2.0)
                if status == 200:
                    return info
            except OSError:
                pass
            if time.monotonic() > deadline:
                terminate(info)
                raise DeploymentError(
                    f"The model server for version {version} of model {model_name!r} ({model_uri}) did not "
                    f"answer GET /ping within {self.startup_timeout:.0f}s (startup_timeout). Nothing was "
                    f"changed. Server log ({log_path}):\n{log_tail(log_path)}"
                )
            time.sleep(0.25)

    def _proxy_ok(self, proxy: Mapping[str, Any] | None) -> bool:
        return bool(
            proxy
            and proxy.get("port") == self.port
            and proxy.get("host") == self.host
            and process_alive(proxy)
        )

    def port_holder(self, model_name: str) -> str | None:
        """The other model of this target's state folder whose endpoint proxy listens on this port, if any."""
        try:
            folders = sorted(p for p in self.state_root().iterdir() if p.is_dir() and p.name != model_name)
        except OSError:
            return None
        for folder in folders:
            try:
                state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            proxy = state.get("proxy") if isinstance(state, dict) else None
            if isinstance(proxy, dict) and proxy.get("port") == self.port and process_alive(proxy):
                return str(state.get("model_name") or folder.name)
        return None

    def _port_taken_error(self, model_name: str) -> DeploymentError:
        holder = self.port_holder(model_name)
        if holder is not None:
            return PortInUseError(
                f"Port {self.port} on {self.host} is the endpoint of model {holder!r}, so the local target "
                f"cannot serve model {model_name!r} there. Nothing was changed. Give model {model_name!r} a port "
                f"of its own: the local target's 'port' setting (settings: {{'kind': 'local', 'port': ...}}; in "
                "the example DAGs, the 'serving_port' param, or leave it empty for a port derived from the name).",
                model=model_name,
                reason="port in use by another model",
                holder=holder,
            )
        return DeploymentError(
            f"Port {self.port} on {self.host} is already in use by another process, so the local target "
            f"cannot serve model {model_name!r} there. Nothing was changed. Stop that process, or give the "
            f"local target another port (settings: {{'kind': 'local', 'port': ...}})."
        )

    def _start_proxy(self, model_name: str, limits: tuple[int, float] | None = None) -> dict[str, Any]:
        max_body_bytes, read_timeout = limits or proxy_limits()
        log_path = self._log_path(model_name, "proxy.log")
        command = [
            sys.executable, "-m", "airflow_mlops.serving.proxy",
            "--host", self.host, "--port", str(self.port), "--state", str(self.state_path(model_name)),
            "--max-body-bytes", str(max_body_bytes), "--read-timeout", repr(read_timeout),
        ]  # fmt: skip
        env = base_environment()
        if self.capture is not None:  # a capture root in an object store needs the store's credentials
            from airflow_mlops.hooks.storage import store_environment

            env.update(
                {
                    k: v
                    for k, v in os.environ.items()
                    if k.startswith(INHERITED_ENV_PREFIXES) and v is not None
                }
            )
            env.update(store_environment([str((self.capture_settings() or {}).get("uri") or "")]))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")) if p
        )
        info = _spawn(command, log_path, env, cwd=self.model_dir(model_name))
        info.update({"host": self.host, "port": self.port, "started_at": utc_now_iso()})
        url = f"{self.endpoint}/_mlops/proxy"
        deadline = time.monotonic() + _PROXY_STARTUP_SECONDS
        while True:
            code = _exited(info)
            if code is not None:
                terminate(info)
                if code == 3:
                    raise self._port_taken_error(model_name)
                raise DeploymentError(
                    f"The endpoint proxy of model {model_name!r} on port {self.port} exited with code {code}. "
                    f"Nothing was changed. Log ({log_path}):\n{log_tail(log_path)}"
                )
            try:
                # The status answers no pid: that the proxy answering is the one just started is checked
                # on this machine, from the port the process listens on.
                # 503: the proxy runs, and says the model server it forwards to does not answer (yet).
                status, _, body = _get(url, timeout=2.0)
                answered = status in (200, 503) and "proxy" in json.loads(body)
                if answered and _listens(info, self.port):
                    return info
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                terminate(info)
                raise DeploymentError(
                    f"The endpoint proxy of model {model_name!r} did not answer on port {self.port} within "
                    f"{_PROXY_STARTUP_SECONDS:.0f}s. Nothing was changed. Log ({log_path}):\n{log_tail(log_path)}"
                )
            time.sleep(0.1)

    def _deployment(self, model_name: str, state: Mapping[str, Any]) -> Deployment:
        from airflow_mlops.serving.status import Deployment

        server, proxy = state["server"], state.get("proxy") or {}
        return Deployment(
            model_name=model_name,
            version=str(server["version"]),
            model_uri=server["model_uri"],
            target=self.config_kind(),
            endpoint=state.get("endpoint") or self.endpoint,
            deployed_at=server.get("started_at") or "",
            ready=process_alive(server) and process_alive(proxy),
            details={
                "pid": server.get("pid"),
                "backend_port": server.get("port"),
                "proxy_pid": proxy.get("pid"),
                "log": server.get("log"),
                "state_file": str(self.state_path(model_name)),
            },
        )

    # -- DeployTarget --------------------------------------------------------------------------------------

    def deploy(self, model_name: str, version: str, model_uri: str) -> Deployment:
        validate_model_name(model_name)
        version = str(version)
        limits = proxy_limits()  # a bad setting fails before anything starts
        with self._locked(model_name):
            state = self.read_state(model_name) or {}
            old_server, old_proxy = state.get("server"), state.get("proxy")
            proxy_ok = self._proxy_ok(old_proxy)
            if (
                proxy_ok
                and old_server
                and str(old_server.get("version")) == version
                and old_server.get("model_uri") == model_uri
                and process_alive(old_server)
            ):
                capture = self.capture_settings(model_uri)
                canary = state.get("canary")
                if state.get("capture") != capture or canary:  # captured otherwise, or a canary to end
                    state = {k: v for k, v in state.items() if k != "canary"}
                    state = {**state, "capture": capture, "updated_at": utc_now_iso()}
                    self._write_state(model_name, state)
                if canary and canary.get("pid") != old_server.get("pid"):
                    terminate(canary)
                return self._deployment(model_name, state)
            if not proxy_ok and not port_is_free(self.host, self.port):
                raise self._port_taken_error(model_name)
            if old_server and not process_alive(old_server):
                log.warning(
                    "The model server of version %s of model %s (pid %s) is not running; this deploy starts "
                    "version %s. Its log (%s):\n%s",
                    old_server.get("version"), model_name, old_server.get("pid"), version, old_server.get("log"),
                    log_tail(old_server.get("log")),
                )  # fmt: skip

            server = self._start_server(model_name, version, model_uri, purpose="serve")
            proxy = old_proxy
            try:
                if not proxy_ok:
                    proxy = self._start_proxy(model_name, limits)
                new_state: dict[str, Any] = {
                    "model_name": model_name,
                    "endpoint": self.endpoint,
                    "target": self.to_config(),
                    "proxy": proxy,
                    "server": server,
                    "capture": self.capture_settings(model_uri),
                    "restarts": [],  # a deploy starts a server with the whole restart budget
                    "updated_at": utc_now_iso(),
                }
                self._write_state(model_name, new_state)
            except BaseException:
                terminate(server)
                if not proxy_ok and proxy is not old_proxy:
                    terminate(proxy)
                raise
            # The proxy now forwards to the new server; what it replaced can go, and a release ends a shadow.
            if old_server and old_server.get("pid") != server["pid"]:
                terminate(old_server)
            terminate(state.get("shadow"))
            terminate(state.get("canary"))
            if old_proxy and not proxy_ok:
                terminate(old_proxy)
            return self._deployment(model_name, new_state)

    def current(self, model_name: str) -> Deployment | None:
        """What the endpoint serves; a dead model server behind a live endpoint is started again (bounded)."""
        state = self.restart_if_dead(model_name)
        if not state or not state.get("server"):
            return None
        return self._deployment(model_name, state)

    def restart_if_dead(self, model_name: str) -> dict[str, Any] | None:
        """
        Start the model's server again if it is dead (its watchdog too) while its endpoint proxy runs.

        At most ``max_restarts`` restarts (the watchdog's included) in ``restart_window`` seconds; each is
        logged and appended to ``restarts`` of the state file. A server that does not start again, or one past
        the bound, stays down and is logged as such: what ``health()`` then reports.

        :return: The model's state afterwards (None if the target does not serve the model).
        """
        state = self.read_state(model_name)
        if not state or not state.get("server") or process_alive(state["server"]):
            return state
        with self._locked(model_name):
            state = self.read_state(model_name)
            server = (state or {}).get("server")
            if not state or not server or process_alive(server) or not self._proxy_ok(state.get("proxy")):
                return state  # revived meanwhile, or no endpoint to serve behind (stopped, moved)
            version, pid = str(server.get("version")), server.get("pid")
            restarts = list(state.get("restarts") or [])
            recent = recent_restarts(restarts, self.restart_window)
            if recent >= self.max_restarts:
                log.error(
                    "The model server of version %s of model %s (pid %s) is not running and is NOT started "
                    "again: %s restarts in the last %g s (max_restarts %s). The next deploy starts it. Its log "
                    "(%s):\n%s",
                    version, model_name, pid, recent, self.restart_window, self.max_restarts, server.get("log"),
                    log_tail(server.get("log")),
                )  # fmt: skip
                return state
            log.warning(
                "The model server of version %s of model %s (pid %s) is not running; starting it again "
                "(restart %s of at most %s in %g s). Its log (%s):\n%s",
                version, model_name, pid, recent + 1, self.max_restarts, self.restart_window, server.get("log"),
                log_tail(server.get("log")),
            )  # fmt: skip
            entry = {"time": utc_now_iso(), "by": "target", "reason": f"model server pid {pid} not running"}
            try:
                new = self._start_server(model_name, version, server["model_uri"], purpose="restart")
            except DeploymentError as err:
                log.error("The model server of version %s of model %s did not start again: %s", version,
                          model_name, err)  # fmt: skip
                state = {**state, "restarts": [*restarts, {**entry, "outcome": "failed"}][-50:]}
                self._write_state(model_name, state)
                return state
            state = {
                **state,
                "server": new,
                "restarts": [*restarts, {**entry, "outcome": "started", "pid": new["pid"]}][-50:],
                "updated_at": utc_now_iso(),
            }
            self._write_state(model_name, state)
            terminate(server, grace=1.0)  # whatever its process group left
            log.warning("The model server of version %s of model %s runs again (pid %s, port %s)", version,
                        model_name, new["pid"], new["port"])  # fmt: skip
            return state

    def stop(self, model_name: str) -> None:
        with self._locked(model_name):
            state = self.read_state(model_name) or {}
            terminate(state.get("shadow"))
            terminate(state.get("canary"))
            terminate(state.get("server"))
            terminate(state.get("proxy"))
            self.state_path(model_name).unlink(missing_ok=True)

    # -- canary ---------------------------------------------------------------------------------------------

    supports_canary = True

    def _canary_deployment(self, model_name: str, state: Mapping[str, Any]) -> Deployment:
        from airflow_mlops.serving.status import Deployment

        canary, server = state["canary"], state.get("server") or {}
        return Deployment(
            model_name=model_name,
            version=str(canary["version"]),
            model_uri=canary["model_uri"],
            target=self.config_kind(),
            endpoint=state.get("endpoint") or self.endpoint,
            deployed_at=canary.get("started_at") or "",
            ready=process_alive(canary) and process_alive(state.get("proxy")),
            details={
                "canary_traffic_percent": canary.get("percent"),
                "canary_port": canary.get("port"),
                "baseline_version": str(server.get("version")) if server else None,
                "pid": canary.get("pid"),
                "log": canary.get("log"),
                "state_file": str(self.state_path(model_name)),
            },
        )

    def deploy_canary(self, model_name: str, version: str, model_uri: str, percent: int) -> Deployment:
        """
        Serve *version* next to the version serving now: the endpoint proxy sends it *percent* % of the requests.

        Starts *version* on a spare loopback port (under its watchdog) and names it in the state file's
        ``canary`` entry: the proxy answers that share of the production requests (chosen by request id) with
        it and captures them with its version. A canary of the same version already running keeps serving (a
        retry changes nothing); with nothing serving the model, *version* is deployed with all traffic. The
        canary ends with :meth:`promote_canary`, the next :meth:`deploy` (a rollback) or :meth:`stop`.
        """
        validate_model_name(model_name)
        version = str(version)
        with self._locked(model_name):
            state = self.read_state(model_name)
            served = (state or {}).get("server")
            if state and served and self._proxy_ok(state.get("proxy")):
                if str(served.get("version")) == version and served.get("model_uri") == model_uri:
                    return self._deployment(model_name, state)  # promoted already (a retry)
                old = state.get("canary")
                if old and str(old.get("version")) == version and process_alive(old):
                    canary = {**old, "percent": int(percent)}
                else:
                    canary = {
                        **self._start_server(model_name, version, model_uri, purpose="canary"),
                        "percent": int(percent),
                    }
                state = {**state, "canary": canary, "updated_at": utc_now_iso()}
                self._write_state(model_name, state)
                if old and old.get("pid") != canary.get("pid"):
                    terminate(old)
                log.info(
                    "Version %s of model %s answers %s%% of the requests of %s (port %s) next to version %s",
                    version, model_name, percent, self.endpoint, canary["port"], served.get("version"),
                )  # fmt: skip
                return self._canary_deployment(model_name, state)
        return self.deploy(model_name, version, model_uri)

    def canary_endpoint(self, deployment: Deployment) -> str:
        port = deployment.details.get("canary_port")
        return f"http://{_LOOPBACK}:{port}" if port else deployment.endpoint

    def predict_canary(
        self, deployment: Deployment, records: Sequence[Mapping[str, Any]], timeout: float = 30.0
    ) -> list[Any]:
        """Predictions of the canary's own model server (probes: not captured as live traffic)."""
        from airflow_mlops.serving.base import post_invocations

        return post_invocations(self.canary_endpoint(deployment), records, timeout=timeout)

    def promote_canary(self, model_name: str, deployment: Deployment) -> Deployment:
        """All traffic to the canary: its server becomes the model's server and the one beside it stops."""
        with self._locked(model_name):
            state = self.read_state(model_name) or {}
            canary, server = state.get("canary"), state.get("server")
            if not canary or str(canary.get("version")) != deployment.version:
                if server and str(server.get("version")) == deployment.version:
                    return self._deployment(model_name, state)  # promoted already (a retry)
                raise DeploymentError(
                    f"Version {deployment.version} of model {model_name!r} is not the canary on the local target "
                    f"at {self.endpoint} (serving: {server.get('version') if server else 'nothing'}); nothing "
                    "to promote",
                    model=model_name,
                    version=deployment.version,
                )
            promoted = {k: v for k, v in canary.items() if k != "percent"}
            state = {k: v for k, v in state.items() if k != "canary"}
            state = {
                **state,
                "server": promoted,
                "capture": self.capture_settings(promoted["model_uri"]),
                "restarts": [],
                "updated_at": utc_now_iso(),
            }
            self._write_state(model_name, state)
        if server and server.get("pid") != promoted.get("pid"):
            terminate(server)
        log.info("Version %s of model %s now answers all requests of %s", deployment.version, model_name,
                 self.endpoint)  # fmt: skip
        return self._deployment(model_name, state)

    # -- shadow ---------------------------------------------------------------------------------------------

    def start_shadow(
        self, model_name: str, version: str, model_uri: str, percent: float = 100.0
    ) -> dict[str, Any]:
        """
        Mirror *percent* % of the model's production requests to *version*, whose answers reach no client.

        Starts *version* on a spare loopback port (under its watchdog, as a served version) and names it in the
        state file's ``shadow`` entry; the endpoint proxy then sends a copy of each chosen request (by its
        request id) to it after answering the client, and captures its answer as ``shadow`` traffic with the
        same request id (:func:`airflow_mlops.serving.replay.compare_shadow` compares the two). A shadow of the
        same version already running only gets the new share. The shadow ends with :meth:`stop_shadow`, the next
        deploy of another version, or :meth:`stop`.

        :return: ``{"model_name", "version", "percent", "port", "pid"}``.
        :raises DeploymentRejectedError: if nothing of the model serves here, so there is no traffic to mirror.
        """
        validate_model_name(model_name)
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 100:
            raise ValueError(f"percent must be a number above 0 and at most 100, got {percent!r}")
        version = str(version)
        with self._locked(model_name):
            state = self.read_state(model_name)
            if not state or not state.get("server") or not self._proxy_ok(state.get("proxy")):
                raise DeploymentRejectedError(
                    f"Nothing of model {model_name!r} serves on the local target at {self.endpoint}: there is no "
                    "traffic to mirror to a shadow. Deploy the champion first.",
                    model=model_name,
                    version=version,
                )
            old = state.get("shadow")
            if old and str(old.get("version")) == version and process_alive(old):
                shadow = {**old, "percent": float(percent)}
            else:
                shadow = {
                    **self._start_server(model_name, version, model_uri, purpose="shadow"),
                    "percent": float(percent),
                }
            self._write_state(model_name, {**state, "shadow": shadow, "updated_at": utc_now_iso()})
        if old and old.get("pid") != shadow.get("pid"):
            terminate(old)
        log.info(
            "Version %s of model %s gets a copy of %g%% of the production requests of %s (port %s)",
            version, model_name, percent, self.endpoint, shadow["port"],
        )  # fmt: skip
        return {"model_name": model_name, "version": version, "percent": float(percent), "port": shadow["port"],
                "pid": shadow.get("pid")}  # fmt: skip

    def stop_shadow(self, model_name: str) -> dict[str, Any] | None:
        """Stop mirroring to the model's shadow and stop its server; the shadow's entry, or None if it had none."""
        with self._locked(model_name):
            state = self.read_state(model_name)
            shadow = (state or {}).get("shadow")
            if not state or not shadow:
                return None
            self._write_state(
                model_name, {k: v for k, v in state.items() if k != "shadow"} | {"updated_at": utc_now_iso()}
            )
        terminate(shadow)
        return dict(shadow)

    def health(self, deployment: Deployment, timeout: float = 10.0) -> Health:
        from airflow_mlops.serving.status import Health

        if deployment.details.get("sandbox"):
            return super().health(deployment, timeout)
        if deployment.details.get("canary_port"):
            canary = self.canary_endpoint(deployment)
            checked = super().health(replace(deployment, endpoint=canary), timeout)
            return Health(checked.ok, f"canary of {deployment.endpoint}: {checked.message}")
        state = self.restart_if_dead(deployment.model_name) or {}
        url = deployment.endpoint.rstrip("/") + "/ping"
        try:
            status, headers, body = _get(url, timeout)
        except OSError as err:
            return Health(False, f"GET {url} failed: {err}{self._down_reason(state)}")
        served = {k.lower(): v for k, v in headers.items()}.get("x-mlops-model-version")
        if status != 200:
            return Health(
                False,
                f"GET {url} answered HTTP {status}: {body[:500].decode(errors='replace')}{self._down_reason(state)}",
            )
        if served != deployment.version:
            return Health(False, f"{deployment.endpoint} serves version {served}, not {deployment.version}")
        return Health(True, f"{deployment.endpoint} serves version {served}")

    def _down_reason(self, state: Mapping[str, Any]) -> str:
        """Why the model server is down, when its process is gone ("" while it runs)."""
        server = state.get("server")
        if not server or process_alive(server):
            return ""
        recent = recent_restarts(list(state.get("restarts") or []), self.restart_window)
        return (
            f"; the model server of version {server.get('version')} is not running and was not started again "
            f"({recent} restarts in the last {self.restart_window:g} s, max_restarts {self.max_restarts}); "
            f"see its log {server.get('log')}"
        )

    def diagnostics(self, deployment: Deployment) -> str:
        log = deployment.details.get("log")
        tail = log_tail(log)
        return f"Server log ({log}):\n{tail}" if tail else ""

    # -- sandboxes (infra validation) ------------------------------------------------------------------------

    def sandbox_dir(self, model_name: str) -> Path:
        """Where the model's sandboxes are recorded (``sandboxes/<port>.json``)."""
        return self.model_dir(model_name) / "sandboxes"

    def stop_leaked_sandboxes(self, model_name: str) -> list[dict[str, Any]]:
        """
        Stop every recorded sandbox of *model_name* whose owner (the task process that started it) is gone.

        A sandbox whose task was killed (SIGKILL: no ``on_kill``) is left running with its port; the record
        written before it started names it. Sandboxes of running tasks are left alone.

        :return: The records of the sandboxes it stopped (a recorded sandbox that stopped with its task is
            only forgotten).
        """
        stopped = []
        for path in sorted(self.sandbox_dir(model_name).glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if process_alive(record.get("owner")):
                continue
            server = record.get("server")
            path.unlink(missing_ok=True)
            where = (
                f"the infra-validation sandbox of version {record.get('version')} of model {model_name} "
                f"(pid {(server or {}).get('pid')}, port {record.get('port')}) recorded by a task process that is "
                f"gone (pid {(record.get('owner') or {}).get('pid')})"
            )
            if server and not process_alive(server):
                log.info("Removed the record of %s; it had stopped with its task", where)
                continue
            if server:
                terminate(server, grace=5.0)
            else:  # killed between the record and the start: whatever serves the recorded port for this model
                _terminate_listener(int(record.get("port") or 0), model_name)
            log.warning("Stopped %s", where)
            stopped.append(record)
        return stopped

    def start_sandbox(self, model_name: str, version: str, model_uri: str) -> Deployment:
        """
        Start *version* on a spare loopback port, recorded in ``sandboxes/<port>.json`` before it starts.

        Leaked sandboxes of the model are stopped first (:meth:`stop_leaked_sandboxes`). The sandbox dies with
        this process (Linux parent-death signal); :meth:`stop_sandbox` stops it and removes the record.
        """
        from airflow_mlops.serving.status import Deployment

        validate_model_name(model_name)
        self.stop_leaked_sandboxes(model_name)
        folder = self.sandbox_dir(model_name)
        me = os.getpid()
        record: dict[str, Any] = {
            "version": str(version),
            "model_uri": model_uri,
            "owner": {"pid": me, "create_time": _create_time(me)},
            "created_at": utc_now_iso(),
        }
        paths: list[Path] = []

        def before_spawn(port: int) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            record["port"] = port
            paths.append(folder / f"{port}.json")
            _write_json(paths[0], record)

        def after_spawn(info: dict[str, Any]) -> None:
            record["server"] = {"pid": info["pid"], "create_time": info["create_time"]}
            _write_json(paths[0], record)

        try:
            info = self._start_server(
                model_name,
                str(version),
                model_uri,
                "sandbox",
                before_spawn=before_spawn,
                after_spawn=after_spawn,
            )
        except BaseException:
            for path in paths:  # _start_server stopped the server
                path.unlink(missing_ok=True)
            raise
        log.info(
            "The sandbox of version %s of model %s serves at http://%s:%s (pid %s)",
            version, model_name, _LOOPBACK, info["port"], info["pid"],
        )  # fmt: skip
        return Deployment(
            model_name=model_name,
            version=str(version),
            model_uri=model_uri,
            target=self.config_kind(),
            endpoint=f"http://{_LOOPBACK}:{info['port']}",
            deployed_at=info["started_at"],
            details={**info, "sandbox": True, "record": str(paths[0])},
        )

    def stop_sandbox(self, deployment: Deployment) -> None:
        terminate(deployment.details)
        if deployment.details.get("record"):
            Path(deployment.details["record"]).unlink(missing_ok=True)


_MOVED_TO_PORTS = frozenset({"serving_port", "port_for_model", "MODEL_PORTS_FIRST", "MODEL_PORTS_COUNT"})


def __getattr__(name: str) -> Any:
    """The port helpers that moved to :mod:`airflow_mlops.serving.ports`, with a deprecation warning."""
    if name in _MOVED_TO_PORTS:
        import warnings

        from airflow_mlops.serving import ports

        warnings.warn(
            f"airflow_mlops.serving.local.{name} moved to airflow_mlops.serving.ports.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(ports, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
