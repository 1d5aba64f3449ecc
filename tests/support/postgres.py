"""
A throwaway PostgreSQL server on loopback (Debian's ``postgresql`` package, no Docker), and a TCP proxy that
counts the bytes between a client and it (what a query moved to the worker).

``initdb`` and ``pg_ctl`` come from the PATH or ``/usr/lib/postgresql/*/bin``; started as root, the server runs
as the ``postgres`` user (PostgreSQL refuses root). ``postgres_server`` is the session fixture the tests share
(one server, a database per module).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"{name} not found: install PostgreSQL (Debian: apt-get install -y postgresql)")
    return found


class CountingProxy:
    """Loopback TCP proxy that counts payload bytes in each direction."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.to_client = 0  # received by the worker
        self.to_server = 0  # sent by the worker
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.to_client = self.to_server = self.connections = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, "to_server"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "to_client"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


class Postgres:
    """A PostgreSQL server of its own under *workdir* (``start``, ``psql``, ``url``, ``stop``)."""

    def __init__(self, workdir: Path | None = None) -> None:
        # A folder of its own the postgres user can enter (pytest's and most temporary folders are root's only).
        self.dir = Path(
            tempfile.mkdtemp(prefix="mlops-pg-", dir=workdir if workdir and os.geteuid() else None)
        )
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            self.dir.chmod(0o755)
            shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"

    def _run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *argv], check=True, capture_output=True, text=True, **kwargs)

    def start(self) -> None:
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
        )

    def psql(
        self, sql: str, database: str = "postgres", port: int | None = None, host: str | None = None
    ) -> str:
        argv = [shutil.which("psql") or pg_bin("psql"), "-h", host or str(self.dir), "-p", str(port or self.port),
                "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql]  # fmt: skip
        return self._run(*argv).stdout.strip()

    def url(self, database: str = "postgres", port: int | None = None) -> str:
        """A SQLAlchemy URL of *database* over TCP (through a :class:`CountingProxy` given its *port*)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{port or self.port}/{database}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """The session's PostgreSQL server: :class:`Postgres` with a database per use and frames loaded by COPY."""

    def __init__(self, server: Postgres) -> None:
        self.server = server
        self.port = server.port
        self._databases: set[str] = set()

    def database(self, name: str) -> str:
        """A SQLAlchemy URL of database *name*, created on first use."""
        if name not in self._databases:
            self.server.psql(f"CREATE DATABASE {name}")
            self._databases.add(name)
        return self.server.url(name)

    def load(self, database: str, tables: dict[str, Any]) -> Any:
        """Load pandas frames into tables of *database* (replacing them); its SQLAlchemy engine."""
        import io

        import sqlalchemy as sa

        engine = sa.create_engine(self.database(database), poolclass=sa.pool.NullPool)
        for name, frame in tables.items():
            frame.head(0).to_sql(name, engine, index=False, if_exists="replace")
            connection = engine.raw_connection()
            try:
                with connection.cursor() as cursor:
                    cursor.copy_expert(
                        f'COPY "{name}" FROM STDIN WITH (FORMAT csv)',
                        io.StringIO(frame.to_csv(index=False, header=False)),
                    )
                connection.commit()
            finally:
                connection.close()
        return engine

    def connection(self, database: str) -> dict[str, Any]:
        """The fields of an Airflow ``postgres`` connection to *database* (for ``set_connection``)."""
        self.database(database)
        return {
            "conn_type": "postgres", "host": "127.0.0.1", "port": self.port, "login": "postgres",
            "schema": database,
        }  # fmt: skip


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (started on first use, stopped at the end)."""
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    try:
        yield PostgresServer(server)
    finally:
        server.stop()
