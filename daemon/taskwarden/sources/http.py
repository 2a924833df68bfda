"""One JSON request with bounded retries, mapped onto taskwarden's error hierarchy.

Shared by every vendor adapter: the vendor supplies its paths and how to describe a
credential problem; this module owns status-code semantics and retry policy.
"""

from __future__ import annotations

import email.utils
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from collections.abc import Generator, Mapping

_BODY_EXCERPT = 200


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds for one request's retries: attempts *and* total time, whichever comes first."""

    attempts: int = 5
    total_timeout: float = 60.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    max_retry_after: float = 120.0
    """A Retry-After longer than this is capped: a poll cycle must end eventually."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    reference = now or datetime.now(tz=UTC)
    return max(0.0, (when - reference).total_seconds())


def with_hint(message: str, hint: str) -> str:
    """A vendor's message, then what to do about it (vendor messages often end with a stop)."""
    return f"{message.rstrip('.')}. {hint}"


def describe_error_body(response: httpx.Response) -> str:
    """The server's own words about an error, whatever shape the vendor uses."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_BODY_EXCERPT].strip() or response.reason_phrase
    messages: list[str] = []
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict):
                    code = item.get("code") or item.get("errorCode") or item.get("title")
                    text = item.get("message") or item.get("detail") or item.get("description")
                    messages.append(": ".join(str(part) for part in (code, text) if part))
        elif isinstance(body.get("message"), str):
            messages.append(body["message"])
    return "; ".join(m for m in messages if m) or json.dumps(body)[:_BODY_EXCERPT]


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer …`` whose repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token='***')"


def _retry_decision(exc: Exception) -> bool | float:
    """stamina backoff hook: honour Retry-After, back off exponentially on other transients."""
    if isinstance(exc, TransientSourceError):
        return exc.retry_after if exc.retry_after is not None else True
    return False


class ApiTransport:
    """Sends GET requests for one source and counts every attempt."""

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
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._auth = auth
        self._source = source
        self._vendor = vendor
        self._credential_hint = credential_hint
        self._retry = retry
        self.calls: Counter[str] = Counter()
        """Attempts per endpoint label, retries included: what the vendor bills and limits."""
        self.outcomes: Counter[tuple[str, str]] = Counter()
        """Attempts per (endpoint, HTTP status or ``error``), for the metrics endpoint."""

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Any:
        """One logical request; transient failures are retried within the policy."""
        if not retry:
            return await self._attempt(
                method, path, endpoint=endpoint, params=params, headers=headers, data=data
            )
        async for attempt in stamina.retry_context(
            on=self._backoff,
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

    def _backoff(self, exc: Exception) -> bool | float:
        """Retry transients; a server-given Retry-After replaces the exponential wait.

        stamina logs every scheduled retry (``stamina.retry_scheduled``) with the cause and
        the wait; the poll cycle's bound context adds the source and cycle id.
        """
        decision = _retry_decision(exc)
        if isinstance(decision, bool):
            return decision
        return min(decision, self._retry.max_retry_after)

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        data: Mapping[str, str] | None,
    ) -> Any:
        self.calls[endpoint] += 1
        what = f"{method} {path}"
        try:
            response = await self._http.request(
                method,
                self._base_url + path,
                params=params,
                headers=headers,
                data=data,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            self.outcomes[endpoint, "error"] += 1
            raise ConnectionFailedError(
                f"{self._vendor} did not answer {what} in time ({type(exc).__name__})",
                source=self._source,
            ) from exc
        except httpx.TransportError as exc:
            self.outcomes[endpoint, "error"] += 1
            raise ConnectionFailedError(
                f"{self._vendor} connection failed during {what}: {type(exc).__name__}: {exc}",
                source=self._source,
            ) from exc
        status = response.status_code
        self.outcomes[endpoint, str(status)] += 1
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError as exc:
                excerpt = response.text[:80].replace("\n", " ")
                raise MalformedResponseError(
                    f"{self._vendor} answered {what} with HTTP {status} but the body is not "
                    f"JSON (starts with {excerpt!r})",
                    source=self._source,
                    status_code=status,
                ) from exc
        raise self._error_for(response, what)

    def _error_for(self, response: httpx.Response, what: str) -> SourceError:
        status = response.status_code
        said = describe_error_body(response)
        base = f"{self._vendor} answered {what} with HTTP {status}: {said}"
        kwargs: dict[str, Any] = {"source": self._source, "status_code": status}
        if status in (401, 403):
            return AuthenticationError(with_hint(base, self._credential_hint), **kwargs)
        if status == 404:
            return NotFoundError(base, **kwargs)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return RateLimitedError(base, retry_after=retry_after, **kwargs)
        if status >= 500 or status == 408:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return ServerError(base, retry_after=retry_after, **kwargs)
        if status in (400, 422):
            return InvalidRequestError(base, **kwargs)
        return SourceError(base, **kwargs)
