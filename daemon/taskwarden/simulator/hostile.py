"""Answers no honest server gives, for the hostile-input tests and ``make chaos``: a body
trickled one byte at a time, a gzip bomb, JSON nested beyond reason, cursors that never
end, and real answers with records edited into something unusable."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import uuid
import zlib
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from taskwarden.simulator.faults import Fault
    from taskwarden.simulator.server import Simulator

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def trickle(
    _sim: Simulator, request: web.Request, handler: Handler, fault: Fault
) -> web.StreamResponse:
    """The real answer, one byte every ``fault.delay`` seconds."""
    real = await handler(request)
    body = real.body if isinstance(real, web.Response) and isinstance(real.body, bytes) else b""
    response = web.StreamResponse(status=real.status, headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    try:
        for index in range(len(body)):
            await response.write(body[index : index + 1])
            await asyncio.sleep(fault.delay)
    except (ConnectionResetError, RuntimeError):
        pass  # the client gave up, as it should
    return response


@functools.cache
def _gzip(data_size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    chunk = b" " * (1 << 20)
    parts = [compressor.compress(b'{"tasks": [], "padding": "')]
    parts.extend(compressor.compress(chunk) for _ in range(data_size // len(chunk)))
    parts.append(compressor.compress(b'"}'))
    parts.append(compressor.flush())
    return b"".join(parts)


async def gzip_bomb(
    _sim: Simulator, _request: web.Request, _handler: Handler, fault: Fault
) -> web.StreamResponse:
    """``fault.size`` bytes once decompressed, about a thousandth of that on the wire."""
    return web.Response(
        body=_gzip(max(fault.size, 1 << 20)),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )


async def deep_json(
    _sim: Simulator, _request: web.Request, _handler: Handler, fault: Fault
) -> web.StreamResponse:
    depth = max(fault.size, 2)
    return web.Response(body=b"[" * depth + b"]" * depth, content_type="application/json")


async def endless_cursor(
    sim: Simulator, _request: web.Request, _handler: Handler, _fault: Fault
) -> web.StreamResponse:
    """A full page of tasks nobody has seen and a cursor nobody has seen, every time."""
    now = sim.now()
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    tasks = [
        {
            "taskId": str(uuid.UUID(int=sim.rng.getrandbits(128), version=4)),
            "taskStatus": "COMPLETED",
            "requestType": "UPDATE_PRODUCT",
            "receivedTime": stamp,
            "finishedTime": stamp,
            "products": [{"productId": "1", "externalReferenceId": "x", "productType": "P"}],
        }
        for _ in range(50)
    ]
    return web.json_response(
        {
            "tasks": tasks,
            "totalSize": 10**9,
            "nextPage": {"startingAfter": tasks[-1]["taskId"]},
            "searchCriteria": {"beginReceivedTime": stamp, "endReceivedTime": stamp},
        }
    )


async def mangle(
    _sim: Simulator, request: web.Request, handler: Handler, fault: Fault
) -> web.StreamResponse:
    """The real answer with its records replaced or extended, and keys overridden."""
    real = await handler(request)
    if not isinstance(real, web.Response) or not isinstance(real.body, bytes):
        return real
    body: Any = json.loads(real.body)
    if isinstance(body, dict):
        key = "data" if "data" in body else "tasks"
        if fault.records is not None and isinstance(body.get(key), list):
            body[key] = [*body[key], *fault.records] if fault.append else list(fault.records)
        body.update(fault.patch or {})
    return web.Response(status=real.status, text=json.dumps(body), content_type="application/json")


async def echo_credentials(
    _sim: Simulator, request: web.Request, _handler: Handler, _fault: Fault
) -> web.StreamResponse:
    """A 401 that repeats the credentials it was sent, decoded and as sent."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    key = value
    if scheme.lower() == "basic":
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            key = base64.b64decode(value).decode().partition(":")[0]
    message = f"The API key {key} is invalid (you sent Authorization: {header})"
    return web.json_response(
        {"type": "unauthorized", "errors": [{"code": "unauthorized", "message": message}]},
        status=401,
    )


HOSTILE: dict[
    str, Callable[[Simulator, web.Request, Handler, Fault], Awaitable[web.StreamResponse]]
] = {
    "trickle": trickle,
    "gzip_bomb": gzip_bomb,
    "deep_json": deep_json,
    "endless_cursor": endless_cursor,
    "mangle": mangle,
    "echo_credentials": echo_credentials,
}
