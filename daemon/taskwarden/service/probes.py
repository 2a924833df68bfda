"""The HTTP endpoint for probes and scrapers: ``/healthz``, ``/readyz``, ``/metrics``.

* ``/healthz``: 200 while the scheduler runs (liveness: restart me if this fails).
* ``/readyz``: 200 when every source completed a poll within ``readiness_factor`` × its
  interval (or is polled by another live replica: "ok (polled by replica …)") and the
  daemon has no trouble of its own (state writes, leases, delivery rounds); 503
  otherwise, the body says what is late or failing and why.
* ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from taskwarden.httpserver import ConnectionLimits, serve_app
from taskwarden.runtime import is_ok
from taskwarden.service.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from taskwarden.service.metrics import Metrics


class Probed(Protocol):
    def alive(self) -> bool: ...
    def readiness(self) -> dict[str, str]:
        """Per source: ``ok`` or why it is not ready."""
        ...


def probes_app(daemon: Probed, metrics: Metrics) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        alive = daemon.alive()
        return web.Response(status=200 if alive else 503, text="ok\n" if alive else "stopped\n")

    async def readyz(_request: web.Request) -> web.Response:
        sources = daemon.readiness()
        ready = bool(sources) and all(is_ok(v) for v in sources.values())
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps({"ready": ready, "sources": sources}) + "\n",
            content_type="application/json",
        )

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


def parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@asynccontextmanager
async def serve_probes(daemon: Probed, metrics: Metrics, bind: str) -> AsyncIterator[str]:
    host, port = parse_bind(bind)
    limits = ConnectionLimits()  # bounded: this port may face the network
    async with serve_app(probes_app(daemon, metrics), host=host, port=port, limits=limits) as url:
        yield url
