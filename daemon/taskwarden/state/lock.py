"""One process per state file, however the file is reached.

Two ``flock``s, both released by the kernel when the process dies:

* on the database file itself, after resolving symlinks: a second path to the same file (a
  symlink, a hard link, a relative path) reaches the same inode and is refused;
* on ``<real path>.lock``, which also names the holder's PID: it still holds while the
  database file is being replaced (moving a corrupt file aside), and deleting it does not
  help a second process, which still meets the lock on the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from taskwarden.errors import StateLockedError


def _holder(fd: int) -> str:
    """The PID holding a flock on ``fd``'s file, from /proc/locks; else unknown."""
    stat = os.fstat(fd)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
                return fields[4]
    return "unknown"


def create_private(path: Path) -> None:
    """Create the file if missing, readable by its owner only (SQLite gives its -wal and
    -shm files the same mode); tighten an existing one we own."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        stat = os.fstat(fd)
        if stat.st_uid == os.geteuid() and stat.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class StateLock:
    """Exclusive use of one state file by this process."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = Path(os.path.realpath(state_path))
        self.path = self.state_path.with_name(self.state_path.name + ".lock")
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Raises `StateLockedError` naming the holder's PID if another process has it."""
        try:
            self._lock(self.path, write_pid=True)
            create_private(self.state_path)
            self._lock(self.state_path, write_pid=False)
        except BaseException:
            self.release()
            raise

    def relock_database(self) -> None:
        """After the database file was replaced (moved aside): lock the new one."""
        if len(self._fds) > 1:
            self._close(self._fds.pop())
        create_private(self.state_path)
        self._lock(self.state_path, write_pid=False)

    def _lock(self, path: Path, *, write_pid: bool) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateLockedError(
                f"state file {self.state_path} is in use by another taskwarden process "
                f"(PID {holder}); stop it, or give this one its own state file"
            ) from None
        if write_pid:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            os.fsync(fd)
        self._fds.append(fd)

    @staticmethod
    def _close(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)

    def release(self) -> None:
        while self._fds:
            self._close(self._fds.pop())
