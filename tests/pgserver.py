"""A real PostgreSQL on loopback for the tests and benchmarks: the Debian binaries, a
throw-away cluster in a temporary directory, a fresh database per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


def _binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def available() -> bool:
    return _binaries() is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """``initdb`` + ``pg_ctl`` into a temporary directory; as root, the cluster runs as the
    ``postgres`` user (the server refuses to run as root)."""

    def __init__(self) -> None:
        bindir = _binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="taskwarden-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        self._databases = 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> PgServer:
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        if not self.data.exists():
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "taskwarden",
                "--no-sync",
                "-E",
                "UTF8",
            )
        self.resume()
        return self

    def resume(self) -> None:
        """Start (again) on the same port and data. ``fsync=off`` only risks an OS crash;
        commits stay synchronous, so one acknowledged survives a killed server (the tests
        kill it)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (a crash, not a shutdown)."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return
        children = Path(f"/proc/{pid}/task/{pid}/children")
        family = (
            [pid, *(int(c) for c in children.read_text().split())] if children.exists() else [pid]
        )
        for member in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, 9)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{m}").exists() for m in family):
            time.sleep(0.05)

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def url(self, database: str = "taskwarden") -> str:
        return f"postgresql://taskwarden@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        self._databases += 1
        name = f"t{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
