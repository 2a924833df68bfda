"""One JSON request with bounded retries, mapped onto taskwarden's error hierarchy.

Shared by every vendor adapter: the vendor supplies its paths and how to describe a
credential problem; this module owns status-code semantics, retry policy and the bounds on
what one answer may cost:

* every attempt has a hard deadline (connect to last body byte: a server trickling one byte
  a second cannot hold a poll), and the retries of one request, Retry-After waits included,
  stay within ``RetryPolicy.total_timeout``;
* a body is read as it is decompressed and refused past ``max_body_bytes`` (a gzip bomb
  costs at most that); JSON nested deeper than ``max_json_depth`` is refused before any
  model sees it; lone UTF-16 surrogates (``\\ud800``) become U+FFFD so that no rendering
  downstream can fail on them.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx
import stamina

from taskwarden.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    SourceError,
    TransientSourceError,
)
from taskwarden.httputil import parse_http_date, parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Mapping
    from datetime import datetime

_BODY_EXCERPT = 200
_ERROR_BODY_BYTES = 64 * 1024
"""An error answer is only read for its message: the rest is dropped."""
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds for one request's retries: attempts *and* total time, whichever comes first."""

    attempts: int = 5
    total_timeout: float = 60.0
    """Every attempt and every wait between them, Retry-After included, fit in this."""
    wait_initial: float = 0.5
    wait_max: float = 30.0
    max_retry_after: float = 120.0
    """A Retry-After longer than this is capped: a poll cycle must end eventually."""


@dataclass(frozen=True, slots=True)
class ResponseLimits:
    """What one answer may cost: time, decompressed bytes and JSON depth."""

    attempt_timeout: float = 30.0
    """Connect to last body byte, per attempt (httpx's own timeouts are per read)."""
    max_body_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 32


class CallMeter(Protocol):
    """Told about every attempt: the process's metrics count them across reloads."""

    def count(self, source: str, endpoint: str, outcome: str) -> None:
        """``outcome``: the HTTP status, or ``error`` when no answer came."""
        ...


_calls_in_scope: ContextVar[tuple[Counter[str], ...]] = ContextVar("calls_in_scope", default=())


@contextmanager
def counting_calls() -> Iterator[Counter[str]]:
    """Count every attempt made inside the block (a poll cycle's cost), per endpoint.

    A context variable, so the concurrent detail fetches of one cycle count towards it and
    another source's cycle running at the same time does not. Scopes nest: an attempt
    counts in every enclosing one.
    """
    calls: Counter[str] = Counter()
    token = _calls_in_scope.set((*_calls_in_scope.get(), calls))
    try:
        yield calls
    finally:
        _calls_in_scope.reset(token)


def with_hint(message: str, hint: str) -> str:
    """A vendor's message, then what to do about it (vendor messages often end with a stop)."""
    return f"{message.rstrip('.')}. {hint}"


def path_segment(value: str) -> str:
    """An identifier from the vendor as one URL path segment (``/``, CR, LF all escaped)."""
    return quote(value, safe="")


def describe_error_body(body: bytes, reason: str = "") -> str:
    """The server's own words about an error, whatever shape the vendor uses."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        excerpt = body[:_BODY_EXCERPT].decode("utf-8", "replace").strip()
        return excerpt or reason
    messages: list[str] = []
    if isinstance(parsed, dict):
        errors = parsed.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict):
                    code = item.get("code") or item.get("errorCode") or item.get("title")
                    text = item.get("message") or item.get("detail") or item.get("description")
                    messages.append(": ".join(str(part) for part in (code, text) if part))
        elif isinstance(parsed.get("message"), str):
            messages.append(str(parsed["message"]))
    said = "; ".join(m for m in messages if m) or json.dumps(parsed)[:_BODY_EXCERPT]
    return said[: _BODY_EXCERPT * 2]


def decode_json(body: bytes, *, max_depth: int, what: str, source: str) -> Any:
    """Parse a body, refusing what no sane answer looks like (too deep, not JSON)."""
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise MalformedResponseError(
            f"{what}: JSON nested too deeply to parse", source=source
        ) from None
    except ValueError as exc:
        excerpt = body[:80].decode("utf-8", "replace").replace("\n", " ")
        raise MalformedResponseError(
            f"{what} but the body is not JSON (starts with {excerpt!r})", source=source
        ) from exc
    clean = _SURROGATE_ESCAPE.search(body) is not None
    return _bounded(parsed, max_depth=max_depth, clean=clean, what=what, source=source)


def _bounded(value: Any, *, max_depth: int, clean: bool, what: str, source: str) -> Any:
    """Check the depth without recursion; replace lone surrogates when there may be some."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise MalformedResponseError(
                f"{what}: JSON nested deeper than {max_depth} levels", source=source
            )
        if isinstance(node, dict):
            for key, item in list(node.items()):
                if clean and isinstance(item, str):
                    node[key] = _LONE_SURROGATE.sub("\ufffd", item)
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
            if clean and any(isinstance(k, str) and _LONE_SURROGATE.search(k) for k in node):
                cleaned = {_LONE_SURROGATE.sub("\ufffd", k): v for k, v in node.items()}
                node.clear()
                node.update(cleaned)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if clean and isinstance(item, str):
                    node[index] = _LONE_SURROGATE.sub("\ufffd", item)
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
    if clean and isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    return value


class _Decoder:
    """Content-Encoding (identity, gzip, deflate) undone in bounded steps."""

    def __init__(self, encoding: str, vendor: str, what: str) -> None:
        name = encoding.strip().lower()
        self._what = f"{vendor} answered {what}"
        if name in ("", "identity"):
            self._zlib: Any = None
        elif name in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._zlib = zlib.decompressobj()
        else:
            raise MalformedResponseError(f"{self._what} with Content-Encoding {encoding!r}")
        self._raw_deflate = name == "deflate"

    def feed(self, data: bytes, budget: int) -> Iterator[bytes]:
        """The decompressed pieces of ``data``, none longer than ``budget``."""
        if self._zlib is None:
            yield data
            return
        while data:
            try:
                piece = self._zlib.decompress(data, max(budget, 1))
            except zlib.error as exc:
                if not self._raw_deflate:
                    raise MalformedResponseError(
                        f"{self._what} with a broken body: {exc}"
                    ) from None
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # deflate without zlib header
                self._raw_deflate = False
                continue
            self._raw_deflate = False
            yield piece
            budget -= len(piece)
            data = self._zlib.unconsumed_tail

    def flush(self) -> bytes:
        return b"" if self._zlib is None else bytes(self._zlib.flush())


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer …`` whose repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token='***')"


@dataclass(frozen=True, slots=True)
class ApiReply:
    """A 2xx answer: its JSON and the server's clock (``Date``), when it said."""

    body: Any
    server_time: datetime | None


class ApiTransport:
    """Sends requests for one source; reports every attempt to the meter."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        auth: httpx.Auth | None,
        source: str,
        vendor: str,
        credential_hint: str,
        retry: RetryPolicy,
        limits: ResponseLimits | None = None,
        meter: CallMeter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._auth = auth
        self._source = source
        self._vendor = vendor
        self._credential_hint = credential_hint
        self._retry = retry
        self._limits = limits or ResponseLimits()
        self._meter = meter
        self._monotonic = monotonic

    @property
    def limits(self) -> ResponseLimits:
        return self._limits

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> ApiReply:
        """One logical request, transient failures retried within the policy: the answer's
        JSON and the server's ``Date`` (a clock the vendor keeps, not ours)."""
        deadline = self._monotonic() + self._retry.total_timeout
        async for attempt in stamina.retry_context(
            on=self._backoff_within(deadline),
            attempts=self._retry.attempts,
            timeout=self._retry.total_timeout,
            wait_initial=self._retry.wait_initial,
            wait_max=self._retry.wait_max,
        ):
            with attempt:
                return await self._attempt(
                    method, path, endpoint=endpoint, params=params, headers=headers, data=data
                )
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _backoff_within(self, deadline: float) -> Callable[[Exception], bool | float]:
        """stamina backoff hook: retry transients, waiting what the server asked for
        (Retry-After) or backing off exponentially with jitter. A wait that would end past
        the request's total budget is not taken: the error is raised now, so a
        ``Retry-After: 3600`` cannot hold a poll beyond ``total_timeout``.

        stamina logs every scheduled retry (``stamina.retry_scheduled``) with the cause and
        the wait; the poll cycle's bound context adds the source and cycle id.
        """
        retries = 0

        def decide(exc: Exception) -> bool | float:
            nonlocal retries
            if not isinstance(exc, TransientSourceError):
                return False
            policy = self._retry
            if exc.retry_after is not None:
                wait = min(exc.retry_after, policy.max_retry_after)
            else:
                backoff = min(policy.wait_max, policy.wait_initial * 2**retries)
                wait = backoff + random.uniform(0, policy.wait_initial)  # noqa: S311 - jitter, not a secret
            retries += 1
            return wait if wait < deadline - self._monotonic() else False

        return decide

    def _count(self, endpoint: str, outcome: str) -> None:
        for scope in _calls_in_scope.get():
            scope[endpoint] += 1
        if self._meter is not None:
            self._meter.count(self._source, endpoint, outcome)

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        data: Mapping[str, str] | None,
    ) -> ApiReply:
        what = f"{method} {path}"
        limit = self._limits.attempt_timeout
        outcome = "error"
        try:
            async with (
                asyncio.timeout(limit),
                self._http.stream(
                    method,
                    self._base_url + path,
                    params=params,
                    headers=headers,
                    data=data,
                    auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                    timeout=limit,
                ) as response,
            ):
                outcome = str(response.status_code)
                ok = 200 <= response.status_code < 300
                cap = self._limits.max_body_bytes if ok else _ERROR_BODY_BYTES
                body = await self._read(response, cap, what, truncate=not ok)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ConnectionFailedError(
                f"{self._vendor} did not answer {what} within {limit:g}s",
                source=self._source,
            ) from exc
        except httpx.DecodingError as exc:
            raise MalformedResponseError(
                f"{self._vendor} answered {what} with a body that cannot be decoded: {exc}",
                source=self._source,
            ) from exc
        except (httpx.TransportError, httpx.HTTPError) as exc:
            raise ConnectionFailedError(
                f"{self._vendor} connection failed during {what}: {type(exc).__name__}: {exc}",
                source=self._source,
            ) from exc
        finally:
            self._count(endpoint, outcome)
        status = response.status_code
        if 200 <= status < 300:
            parsed = decode_json(
                body,
                max_depth=self._limits.max_json_depth,
                what=f"{self._vendor} answered {what} with HTTP {status}",
                source=self._source,
            )
            return ApiReply(parsed, parse_http_date(response.headers.get("Date")))
        raise self._error_for(status, response.headers, body, response.reason_phrase, what)

    async def _read(
        self, response: httpx.Response, cap: int, what: str, *, truncate: bool
    ) -> bytes:
        """The decompressed body, refused (or, for an error answer, cut) past ``cap``.

        Decompressed here, never more than the remaining budget per step: one 64 KiB gzip
        chunk can inflate to 64 MiB in a decoder that is not bounded (httpx's is not)."""
        decoder = _Decoder(response.headers.get("Content-Encoding", ""), self._vendor, what)
        chunks: list[bytes] = []
        size = 0
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw, cap - size + 1):
                size += len(piece)
                if size > cap:
                    if truncate:
                        chunks.append(piece[: cap - (size - len(piece))])
                        return b"".join(chunks)
                    raise MalformedResponseError(
                        f"{self._vendor} answered {what} with more than {cap:,} bytes "
                        "(decompressed); refused",
                        source=self._source,
                    )
                chunks.append(piece)
        chunks.append(decoder.flush())
        return b"".join(chunks)[: cap if truncate else None]

    def _error_for(
        self, status: int, headers: httpx.Headers, body: bytes, reason: str, what: str
    ) -> SourceError:
        said = describe_error_body(body, reason)
        base = f"{self._vendor} answered {what} with HTTP {status}: {said}"
        kwargs: dict[str, Any] = {"source": self._source, "status_code": status}
        if status in (401, 403):
            return AuthenticationError(with_hint(base, self._credential_hint), **kwargs)
        if status == 404:
            return NotFoundError(base, **kwargs)
        if status == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return RateLimitedError(base, retry_after=retry_after, **kwargs)
        if status >= 500 or status == 408:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return ServerError(base, retry_after=retry_after, **kwargs)
        if status in (400, 422):
            return InvalidRequestError(base, **kwargs)
        return SourceError(base, **kwargs)
