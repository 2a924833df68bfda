"""Helpers for tests that run taskwarden as a subprocess, and bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from taskwarden.service.daemon import Daemon

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


async def until(check: Callable[[], Awaitable[bool] | bool], within: float = 20.0) -> None:
    """Bounded wait on an observable condition (no sleeping and hoping)."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free loopback port (no access log: URLs may carry test secrets); yields
    its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_daemon(config: Path) -> AsyncIterator[tuple[Daemon, asyncio.Task[int]]]:
    """A daemon on ``config`` in this process, ready (or already exited: its error is
    raised); stopped at the end of the block, within a bound. ``task.result()`` is then
    its exit code."""
    from taskwarden.config import config_loader
    from taskwarden.service.daemon import Daemon

    daemon = Daemon(config_loader(config), handle_signals=False)
    task = asyncio.create_task(daemon.run())
    try:
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()
        yield daemon, task
    finally:
        daemon.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=20)
