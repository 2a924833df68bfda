"""A Slack-compatible HTTP endpoint on loopback: ``chat.postMessage``, ``auth.test`` and
incoming webhooks, with Slack's answers for bad tokens and unknown channels, a per-channel
rate limit that answers 429 like Slack does, and the simulator's fault injection.

Used by the tests, ``taskwarden demo`` and the benchmarks (slack-sdk's ``base_url`` and a
webhook URL point here).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from taskwarden.httpserver import serve_app
from taskwarden.simulator.faults import Fault, FaultQueue

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


def _length(text: object) -> int:
    return len(str(text).encode("utf-16-le", "surrogatepass")) // 2


# (block type, part) → (most items, longest text of one item); None: not limited.
_LIMITS: dict[tuple[str, str], tuple[int | None, int]] = {
    ("header", "text"): (None, 150),
    ("section", "text"): (None, 3000),
    ("section", "fields"): (10, 2000),
    ("context", "elements"): (10, 3000),
}


def _block_problems(index: int, block: dict[str, Any]) -> Iterator[str]:
    kind = str(block.get("type"))
    for (limited, part), (most, longest) in _LIMITS.items():
        if limited != kind or part not in block:
            continue
        items = block[part] if isinstance(block[part], list) else [block[part]]
        if most is not None and len(items) > most:
            yield f"blocks[{index}].{part}: {len(items)} items (at most {most})"
        for item in items:
            text = item.get("text", "") if isinstance(item, dict) else item
            if (length := _length(text)) > longest:
                yield f"blocks[{index}].{part}: text of {length} (at most {longest})"


def block_problem(blocks: object) -> str | None:
    """What Slack would refuse in ``blocks`` (it answers ``invalid_blocks``), or None.

    The limits Slack enforces on the blocks taskwarden sends: 50 blocks, a header's 150
    characters, a section's 3,000 and 10 fields of 2,000, a context's 10 elements.
    """
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        return "blocks is not a list of objects"
    if len(blocks) > 50:
        return f"{len(blocks)} blocks (at most 50)"
    for index, block in enumerate(blocks):
        for problem in _block_problems(index, block):
            return problem
    return None


@dataclass(frozen=True, slots=True)
class SlackMessage:
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    ts: str
    via: str
    """``api`` or ``webhook``."""
    broadcast: bool = False
    """A thread reply also shown in the channel (``reply_broadcast``)."""
    at: float = field(default_factory=time.monotonic)

    @property
    def raw(self) -> str:
        """Everything Slack would render, for assertions about escaping."""
        return json.dumps({"text": self.text, "blocks": self.blocks})


class SlackServer:
    def __init__(
        self,
        *,
        token: str = "xoxb-test-token",
        channels: tuple[str, ...] = ("alerts",),
        min_interval: float | None = 1.0,
        webhooks: dict[str, str] | None = None,
    ) -> None:
        self.token = token
        self.channels = set(channels)
        self.min_interval = min_interval
        """Seconds Slack wants between two messages to one channel (None: no limit)."""
        self.webhooks = dict(webhooks or {"T000/B000/hook": "alerts"})
        self.messages: list[SlackMessage] = []
        self.faults = FaultQueue()
        self.refused: list[str] = []
        """Why messages were refused as ``invalid_blocks`` (what Slack would not render)."""
        self.rate_limited: Counter[str] = Counter()
        """429s answered because a sender posted faster than ``min_interval``."""
        self.base_url = ""
        self.received = 0
        """Requests that reached a vendor endpoint, answered or not."""
        self._last_post: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._changed = asyncio.Event()
        self.on_message: list[Callable[[SlackMessage], None]] = []

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def webhook_url(self, path: str = "T000/B000/hook") -> str:
        return f"{self.base_url}/hooks/{path}"

    def inject(self, fault: Fault) -> None:
        self.faults.add(fault)

    def in_channel(self, channel: str = "alerts") -> list[SlackMessage]:
        return [m for m in self.messages if m.channel == channel]

    async def wait_received(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while self.received < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, count: int, within: float = 10.0) -> list[SlackMessage]:
        """Bounded wait until at least ``count`` messages arrived (no sleeping and hoping)."""
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.messages)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/api/auth.test", self._auth_test)
        app.router.add_post("/hooks/{path:.*}", self._webhook)
        return app

    # --- handlers ----------------------------------------------------------------------------

    async def _fault(self, route: str) -> web.Response | None:
        self.received += 1
        self._changed.set()
        fault = self.faults.peek(route)
        if fault is None or fault.kind == "slow":
            return None  # a slow answer is taken after the message is recorded
        self.faults.take(route)
        if fault.kind == "rate_limit":
            headers = {"Retry-After": f"{int(fault.retry_after or 1)}"}
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers=headers
            )
        if fault.kind == "drop":
            raise web.HTTPServiceUnavailable  # closes like a proxy giving up
        return web.json_response({"ok": False, "error": "internal_error"}, status=fault.status)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.token}"

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return data if isinstance(data, dict) else {}
        form = await request.post()
        body: dict[str, Any] = {k: str(v) for k, v in form.items()}
        if isinstance(body.get("blocks"), str):
            body["blocks"] = json.loads(body["blocks"])
        return body

    def _too_fast(self, channel: str) -> bool:
        now = time.monotonic()
        last = self._last_post.get(channel)
        if self.min_interval is not None and last is not None and now - last < self.min_interval:
            self.rate_limited[channel] += 1
            return True
        self._last_post[channel] = now
        return False

    def _refuse(self, body: dict[str, Any]) -> str | None:
        problem = block_problem(body.get("blocks") or [])
        if problem is not None:
            self.refused.append(problem)
            self._changed.set()
        return problem

    def _record(self, channel: str, body: dict[str, Any], via: str) -> SlackMessage:
        message = SlackMessage(
            channel=channel,
            text=str(body.get("text", "")),
            blocks=list(body.get("blocks") or []),
            thread_ts=body.get("thread_ts") or None,
            ts=f"1700000000.{next(self._ts):06d}",
            via=via,
            broadcast=str(body.get("reply_broadcast", "")).lower() in ("true", "1"),
        )
        self.messages.append(message)
        for callback in self.on_message:
            callback(message)
        self._changed.set()
        return message

    async def _post_message(self, request: web.Request) -> web.Response:
        if (faulted := await self._fault("slack.postMessage")) is not None:
            return faulted
        if not self._authorised(request):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = await self._body(request)
        channel = str(body.get("channel", ""))
        if channel not in self.channels:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if (problem := self._refuse(body)) is not None:
            return web.json_response({"ok": False, "error": "invalid_blocks", "detail": problem})
        if self._too_fast(channel):
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        message = self._record(channel, body, "api")
        await self._slow("slack.postMessage")
        return web.json_response({"ok": True, "channel": channel, "ts": message.ts})

    async def _slow(self, route: str) -> None:
        """Slack accepted the message but its answer is late (or never arrives)."""
        fault = self.faults.peek(route)
        if fault is not None and fault.kind == "slow":
            self.faults.take(route)
            await asyncio.sleep(fault.delay)

    async def _auth_test(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response({"ok": True, "user": "taskwarden", "team": "Loopback"})

    async def _webhook(self, request: web.Request) -> web.Response:
        if (faulted := await self._fault("slack.webhook")) is not None:
            return faulted
        channel = self.webhooks.get(request.match_info["path"])
        if channel is None:
            return web.Response(status=404, text="no_service")
        body = await self._body(request)
        if self._refuse(body) is not None:
            return web.Response(status=400, text="invalid_blocks")
        if self._too_fast(channel):
            return web.Response(status=429, text="rate_limited", headers={"Retry-After": "1"})
        self._record(channel, body, "webhook")
        await self._slow("slack.webhook")
        return web.Response(status=200, text="ok")


@asynccontextmanager
async def running_slack(
    server: SlackServer | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[SlackServer]:
    """Serve ``server`` on loopback for the duration of the block; ``.base_url`` is set."""
    slack = server or SlackServer()
    async with serve_app(slack.app(), host=host, port=port) as base_url:
        slack.base_url = base_url
        yield slack
