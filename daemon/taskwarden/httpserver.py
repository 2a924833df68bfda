"""Serving an aiohttp application on a socket for the length of a block, with bounds.

The daemon's health port may be exposed (the image binds ``0.0.0.0:9464``): idle or
trickling connections must not be able to exhaust file descriptors and starve the
daemon's own work (Slack delivery shares the process). So:

* at most ``max_connections`` connections at a time: one more closes the oldest, so
  idle connections cannot keep a probe out;
* each connection lives at most ``connection_lifetime`` seconds, however slowly it sends
  its headers (aiohttp has no header timeout) — a probe or a scrape takes milliseconds;
* idle keep-alive connections are closed after ``keepalive`` seconds;
* shutting down waits at most ``shutdown_timeout`` seconds for open requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 64
    connection_lifetime: float = 10.0
    keepalive: float = 5.0
    shutdown_timeout: float = 1.0


UNBOUNDED = ConnectionLimits(max_connections=100_000, connection_lifetime=3600.0, keepalive=75)
"""For the simulator and test endpoints, which serve long benchmarks on loopback."""


class _Bounded(asyncio.Protocol):
    """Delegates to aiohttp's protocol, cutting the connection at the end of its lifetime."""

    def __init__(self, inner: Any, lifetime: float, closed: Callable[[_Bounded], None]) -> None:
        self._inner = inner
        self._lifetime = lifetime
        self._closed = closed
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._lifetime, transport.abort)  # type: ignore[attr-defined]
        self._inner.connection_made(transport)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            self._inner.connection_lost(exc)
        finally:
            self._closed(self)


@asynccontextmanager
async def serve_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    limits: ConnectionLimits = UNBOUNDED,
) -> AsyncIterator[str]:
    """Serve ``app`` for the duration of the block; yields its base URL."""
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=limits.keepalive
    )
    await runner.setup()
    server = runner.server
    assert server is not None
    live: dict[_Bounded, None] = {}
    """Open connections, oldest first."""

    def factory() -> asyncio.Protocol:
        while len(live) >= limits.max_connections:
            oldest = next(iter(live))
            del live[oldest]
            oldest.abort()
        protocol = _Bounded(server(), limits.connection_lifetime, lambda p: live.pop(p, None))
        live[protocol] = None
        return protocol

    loop = asyncio.get_running_loop()
    listener = await loop.create_server(factory, host, port, backlog=128)
    bound = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        listener.close()
        await server.shutdown(limits.shutdown_timeout)
        await runner.cleanup()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), limits.shutdown_timeout)
