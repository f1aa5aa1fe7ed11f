"""A throwaway PostgreSQL 15 cluster for the production Dagster instance's tests.

`postgres_server` (session-scoped): `initdb` into a temporary directory, a server on a free
port of 127.0.0.1 (fsync, synchronous commit and full-page writes off: it is thrown away),
password authentication (scram-sha-256, so a wrong `DAGSTER_PG_PASSWORD` fails as it
would on RDS), stopped and deleted at the end of the session. About 1 s.

PostgreSQL 15 is part of every machine image this suite runs on, so a missing `initdb`
FAILS the test (with what to install), it does not skip: a silent skip is how the
production instance config went untested before.

The server refuses to run as root, so as root the cluster is created and started as the
`postgres` user (`runuser`); as any other user it runs as that user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("TRADING_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
PASSWORD = "pg-test-password-3f9a"  # distinctive, so a test can look for leaks of it


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    data_dir: Path

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=db)

    def create_database(self, name: str) -> str:
        """A new, empty database (dropped first if it exists); returns its name."""
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def dagster_env(self, db: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads, pointing at `db`."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USER": self.user, "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": db}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser") is None:
        pytest.fail("running as root, but `runuser` is missing: PostgreSQL refuses to run as root")
    try:
        import pwd

        pwd.getpwnam(SUPERUSER)
    except KeyError:
        pytest.fail("running as root, but there is no `postgres` user to run the server as "
                    "(install the postgresql-15 package, which creates it, or run the tests as a non-root user)")
    return ["runuser", "-u", SUPERUSER, "--", *argv]


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def start_cluster(root: Path) -> PostgresServer:
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        pytest.fail(f"PostgreSQL 15 is not installed ({initdb} is missing): the production Dagster "
                    "instance (deploy/dagster.yaml) is tested against a real PostgreSQL. Install it "
                    "(Debian/Ubuntu: apt-get install postgresql-15) or set TRADING_TEST_PG_BIN to its bin/ directory.")
    data, sock = root / "data", root / "sock"
    sock.mkdir(parents=True)
    pwfile = root / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, SUPERUSER, SUPERUSER)
        for path in (sock, pwfile):
            shutil.chown(path, SUPERUSER, SUPERUSER)
    _run([str(initdb), "-D", str(data), "-U", SUPERUSER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
          "-E", "UTF8", "--locale=C.UTF-8", "-N"], "initdb")
    for attempt in range(3):
        port = _free_port()
        options = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        proc = subprocess.run(
            _as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                             "-w", "-t", "30", "-o", options, "start"]),
            capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            return PostgresServer("127.0.0.1", port, SUPERUSER, PASSWORD, data)
        if attempt == 2:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            pytest.fail(f"pg_ctl start failed: {proc.stderr[-1500:]}\n{log[-1500:]}")
        time.sleep(0.2)  # the free port was taken in between: try another
    raise AssertionError("unreachable")


def stop_cluster(server: PostgresServer) -> None:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate",
                                        "-w", "stop"]), capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="trading-pg-"))
    server = None
    try:
        server = start_cluster(root)
        yield server
    finally:
        if server is not None:
            stop_cluster(server)
        shutil.rmtree(root, ignore_errors=True)
