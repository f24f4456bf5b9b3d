"""A throwaway PostgreSQL for the cluster-mode tests, started through .ci/postgres on loopback.

``pg_server`` (session): the server's URL; ``pg_restartable`` (per test): a server of its own that the test stops
and starts again (:class:`Server`); skipped when the PostgreSQL binaries are missing, unless
``PROFILE_STUDIO_REQUIRE_PG`` is set (as .ci/test does), where it fails instead. ``pg_url`` (per test): a
fresh, empty database on it, so tests do not see each other's jobs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres"
WAIT = 60  # seconds: a bound on a hung cluster test, not a speed requirement


def until(check, what: str, ignore: tuple[type[BaseException], ...] = ()):
    """``check()`` until it returns something true, which is returned; an exception of ``ignore`` meanwhile counts
    as not yet (e.g. ``QueueUnreachable`` while the database restarts). AssertionError after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            out = check()
        except ignore:
            out = None
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_binaries() -> bool:
    if os.environ.get("PG_BIN"):
        return True
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("pg_config") is not None


class Server:
    """A throwaway server in its own folder: ``url``; ``stop()`` and ``start()`` again on the same folder and port
    (its data kept: a restart)."""

    def __init__(self):
        if not have_binaries():
            if os.environ.get("PROFILE_STUDIO_REQUIRE_PG"):
                pytest.fail("PostgreSQL server binaries are missing and PROFILE_STUDIO_REQUIRE_PG is set "
                            "(.ci/setup installs Debian's postgresql)")
            pytest.skip("PostgreSQL server binaries are missing (apt-get install postgresql)")
        self.folder = tempfile.mkdtemp(prefix="profile-studio-pg-")  # under /tmp: the server's user must reach it
        self.port = _free_port()
        self.url = ""
        self.start()

    def start(self) -> None:
        out = subprocess.run(["bash", str(SCRIPT), "start", self.folder, str(self.port)], capture_output=True,
                             text=True, timeout=120)
        if out.returncode:
            pytest.fail(f"could not start PostgreSQL: {out.stderr.strip()}")
        self.url = out.stdout.strip()

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", self.folder], capture_output=True, timeout=120)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    server = Server()
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture
def pg_restartable():
    server = Server()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server):
    import psycopg

    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
