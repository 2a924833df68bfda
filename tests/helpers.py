"""Helpers for tests that run taskwarden as a subprocess."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

TASKWARDEN = [sys.executable, "-m", "taskwarden"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "daemon")
    env.update(extra)
    return env
