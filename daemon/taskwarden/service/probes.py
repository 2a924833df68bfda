"""The HTTP endpoint for probes, scrapers and operators: ``/healthz``, ``/readyz``,
``/metrics``, the status page (``/``) and the JSON API (``/api/v1/…``).

* ``/healthz``: 200 while the scheduler runs (liveness: restart me if this fails).
* ``/readyz``: 200 when every source completed a poll within ``readiness_factor`` × its
  interval (or is polled by another live replica: "ok (polled by replica …)") and the
  daemon has no trouble of its own (state writes, leases, delivery rounds); 503
  otherwise, the body says what is late or failing and why.
* ``/metrics``: Prometheus text format.
* ``/`` (and ``/status``): the status page; ``GET /api/v1/status``, ``/api/v1/alerts``
  (``?filter=`` label matchers), ``/api/v1/silences``: read-only, open like the probes.
  ``POST /api/v1/silences`` and ``DELETE /api/v1/silences/{id}`` need ``Authorization:
  Bearer`` with the secret ``daemon.api_token`` (compared in constant time); without one
  configured, writes are disabled.
"""

from __future__ import annotations

import hmac
import json
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from taskwarden.config import parse_duration
from taskwarden.errors import ConfigError
from taskwarden.httpserver import ConnectionLimits, serve_app
from taskwarden.matchers import parse_all, parse_matchers
from taskwarden.runtime import is_ok
from taskwarden.service.metrics import CONTENT_TYPE
from taskwarden.service.status import (
    alert_json,
    matching,
    silence_json,
    status_html,
    status_json,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from taskwarden.matchers import Matcher
    from taskwarden.routing import Silence
    from taskwarden.service.metrics import Metrics
    from taskwarden.service.status import StatusView


class Probed(Protocol):
    def alive(self) -> bool: ...
    def readiness(self) -> dict[str, str]:
        """Per source: ``ok`` or why it is not ready."""
        ...


class Operated(Protocol):
    """What the status page and the API need of the daemon."""

    def status(self) -> StatusView: ...
    def api_token(self) -> str | None: ...
    def add_silence(
        self, matchers: tuple[Matcher, ...], duration: timedelta, comment: str, author: str
    ) -> Silence:
        """Raises `ConfigError` for a silence that could never match."""
        ...

    def expire_silence(self, silence_id: str) -> bool: ...


MAX_API_BODY = 64 * 1024


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data, indent=1) + "\n", content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _authorized(request: web.Request, token: str | None) -> web.Response | None:
    """None when the request may write; else the answer that says why not."""
    if not token:
        return _error(403, "writes are disabled: configure the secret daemon.api_token")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        response = _error(401, "a valid 'Authorization: Bearer <daemon.api_token>' is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="taskwarden"'
        return response
    return None


def _silence_request(body: Any) -> tuple[tuple[Matcher, ...], timedelta, str, str]:
    """(matchers, duration, comment, author) from a POST body; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")  # noqa: TRY004 - answered 400, like every bad body
    unknown = set(body) - {"matchers", "duration", "comment", "createdBy"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    raw = body.get("matchers")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("'matchers' must be a matcher string or a non-empty list of them")
    duration = parse_duration(body.get("duration", "2h"))
    if not isinstance(duration, timedelta) or duration <= timedelta(0):
        raise ValueError("'duration' must be a positive duration such as 90m or 2h")
    comment, author = body.get("comment", ""), body.get("createdBy", "")
    if not isinstance(comment, str) or not isinstance(author, str):
        raise ValueError("'comment' and 'createdBy' must be strings")  # noqa: TRY004 - answered 400
    return parse_all(texts), duration, comment[:1000], author[:200]


def _api_routes(app: web.Application, operated: Operated) -> None:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=status_html(operated.status()), content_type="text/html")

    async def status(_request: web.Request) -> web.Response:
        return _json(status_json(operated.status()))

    async def alerts(request: web.Request) -> web.Response:
        try:
            matchers = parse_matchers(request.query.get("filter", ""))
        except ValueError as exc:
            return _error(400, f"filter: {exc}")
        view = operated.status()
        return _json([alert_json(r) for r in matching(view.alerts, matchers)])

    async def silences(_request: web.Request) -> web.Response:
        view = operated.status()
        return _json([silence_json(s, view.now) for s in view.silences])

    async def add_silence(request: web.Request) -> web.Response:
        if (refused := _authorized(request, operated.api_token())) is not None:
            return refused
        try:
            body = json.loads(await request.read())
            matchers, duration, comment, author = _silence_request(body)
            added = operated.add_silence(matchers, duration, comment, author)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is larger than {MAX_API_BODY} bytes")
        except (ValueError, ConfigError) as exc:
            return _error(400, str(exc))
        return _json(silence_json(added, added.starts_at), 201)

    async def expire_silence(request: web.Request) -> web.Response:
        if (refused := _authorized(request, operated.api_token())) is not None:
            return refused
        silence_id = request.match_info["silence_id"]
        if silence_id.startswith("config:"):
            return _error(409, f"{silence_id} comes from the configuration: remove it there")
        if not operated.expire_silence(silence_id):
            return _error(404, f"no silence with id {silence_id!r}")
        return _json({"id": silence_id, "status": "expired"})

    app.router.add_get("/", page)
    app.router.add_get("/status", page)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_get("/api/v1/silences", silences)
    app.router.add_post("/api/v1/silences", add_silence)
    app.router.add_delete("/api/v1/silences/{silence_id}", expire_silence)


def probes_app(
    daemon: Probed, metrics: Metrics, operated: Operated | None = None
) -> web.Application:
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

    app = web.Application(client_max_size=MAX_API_BODY)
    if operated is not None:
        _api_routes(app, operated)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


def parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@asynccontextmanager
async def serve_probes(
    daemon: Probed, metrics: Metrics, bind: str, operated: Operated | None = None
) -> AsyncIterator[str]:
    host, port = parse_bind(bind)
    limits = ConnectionLimits()  # bounded: this port may face the network
    app = probes_app(daemon, metrics, operated)
    async with serve_app(app, host=host, port=port, limits=limits) as url:
        yield url
