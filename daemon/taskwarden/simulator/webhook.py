"""An Alertmanager-webhook consumer on loopback, for the demo: it keeps every payload it is
sent and tells its listeners (what an incident tool behind a webhook would receive)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from aiohttp import web

from taskwarden.httpserver import serve_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class WebhookConsumer:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.on_payload: list[Callable[[dict[str, Any]], None]] = []
        self.base_url = ""

    @property
    def url(self) -> str:
        return f"{self.base_url}/alerts"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            return web.Response(status=400, text="not JSON")
        if not isinstance(payload, dict) or payload.get("version") != "4":
            return web.Response(status=400, text="not an Alertmanager webhook payload (v4)")
        self.payloads.append(payload)
        for listener in self.on_payload:
            listener(payload)
        return web.Response(status=200)


@asynccontextmanager
async def running_webhook_consumer(
    consumer: WebhookConsumer | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[WebhookConsumer]:
    served = consumer or WebhookConsumer()
    async with serve_app(served.app(), host=host, port=port) as base_url:
        served.base_url = base_url
        yield served
