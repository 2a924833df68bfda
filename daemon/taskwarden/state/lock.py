"""One daemon per state file: an advisory lock beside it that names its holder."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import TYPE_CHECKING

from taskwarden.errors import StateLockedError

if TYPE_CHECKING:
    from pathlib import Path


class StateLock:
    """``flock`` on ``<state>.lock``; released by the kernel when the process dies."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._state_path = state_path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLockedError(
                f"state file {self._state_path} is in use by another taskwarden process "
                f"(PID {holder}); stop it, or give this one its own state file"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
