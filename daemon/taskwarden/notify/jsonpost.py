"""One JSON POST to a receiver's HTTP API, and what its answer means for the outbox: 2xx
accepted; 408, 429 and 5xx retried (Retry-After honoured); any other answer given up; a
server that cannot be reached retried. Shared by the webhook, PagerDuty and Alertmanager."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from taskwarden.errors import PermanentDeliveryError, TransientDeliveryError
from taskwarden.httputil import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

MAX_ERROR_BODY = 512
"""Bytes of a refusal's body kept for the error message (a hostile answer stays small)."""


def receiver_client(timeout: float) -> httpx.AsyncClient:
    """The HTTP client of one delivery: its timeout, and no redirects (a receiver that
    answers 3xx is refused, never followed to wherever it points)."""
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False)


async def read_excerpt(response: httpx.Response) -> str:
    """The first `MAX_ERROR_BODY` bytes of an answer, as text."""
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= MAX_ERROR_BODY:
            break
    return kept[:MAX_ERROR_BODY].decode(errors="replace").strip()


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    receiver: str,
    service: str,
    headers: Mapping[str, str] | None = None,
    explain: Callable[[str], str] | None = None,
) -> None:
    """POST ``body``; returns when accepted, raises a `DeliveryError` otherwise.
    ``explain`` turns the answer's body into the reason shown (default: the body itself)."""
    sent_headers = {
        **(headers or {}),
        "Content-Type": "application/json",
        "User-Agent": "taskwarden",
    }
    try:
        async with client.stream("POST", url, content=body, headers=sent_headers) as response:
            excerpt = await read_excerpt(response)
    except httpx.HTTPError as exc:
        raise TransientDeliveryError(
            f"{service} unreachable: {type(exc).__name__}: {exc}", receiver=receiver
        ) from exc
    if response.is_success:
        return
    reason = explain(excerpt) if explain is not None else excerpt
    why = f"{service} answered {response.status_code}" + (f": {reason}" if reason else "")
    status = response.status_code
    if status in (408, 429) or status >= 500:
        raise TransientDeliveryError(
            why,
            receiver=receiver,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    raise PermanentDeliveryError(why, receiver=receiver)
