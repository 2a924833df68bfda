"""Elastic Path Commerce Cloud PCM jobs: the client and its `Source` adapter.

Polling model, and why:

* The listing has no time filter; it is newest first. A poll pages ``GET /pcm/jobs``
  (``page[limit]=100``) until a page reaches a job created before ``checkpoint - overlap``
  (the rest of that page is read too), or the list ends. The overlap absorbs small
  disorder in the listing and clock skew; an idle poll costs one listing call.
* Open jobs (``pending``, ``started``) older than the scan are refreshed one by one with
  ``GET /pcm/jobs/{id}``; a 404 means the job is gone.
* Failed jobs are enriched with ``GET /pcm/jobs/{id}/errors``.
* Authentication is OAuth client credentials: a token from ``POST /oauth/access_token``,
  cached, refreshed shortly before it expires, and once more on a 401.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from pydantic import ValidationError

from taskwarden.errors import (
    AuthenticationError,
    MalformedResponseError,
    NotFoundError,
    ServerError,
)
from taskwarden.model import Observation, Phase, Problem, Task, TaskDetails
from taskwarden.sources.elasticpath_api import (
    JobDetailPayload,
    JobErrorsPayload,
    JobListPayload,
    JobPayload,
    TokenPayload,
)
from taskwarden.sources.http import ApiTransport, RetryPolicy, describe_error_body, with_hint

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable
    from datetime import datetime, timedelta

    from taskwarden.sources.base import SourceView

log = structlog.get_logger(__name__)

VENDOR = "Elastic Path"
JOBS_PATH = "/pcm/jobs"
TOKEN_PATH = "/oauth/access_token"  # noqa: S105 - a URL path, not a secret
PAGE_LIMIT = 100
MAX_PAGES = 10_000
STATUS_PHASES = {
    "pending": Phase.OPEN,
    "started": Phase.OPEN,
    "success": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "cancelled": Phase.CANCELLED,
}
TOKEN_MARGIN = 60.0
"""Seconds before its expiry a token is replaced."""


def phase_of(status: str) -> Phase:
    return STATUS_PHASES.get(status.lower(), Phase.UNKNOWN)


class ClientCredentialsAuth(httpx.Auth):
    """Elastic Path's client-credentials token, cached; its repr shows no secret."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        source: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._source = source
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(client_id={self._client_id!r}, client_secret='***')"

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self._token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
            },
            headers={"Accept": "application/json"},
        )

    def _accept(self, response: httpx.Response) -> None:
        status = response.status_code
        said = describe_error_body(response)
        what = f"{VENDOR} answered POST {TOKEN_PATH} with HTTP {status}: {said}"
        if status in (400, 401, 403, 422):
            raise AuthenticationError(
                with_hint(
                    what, f"Check the client_id and client_secret of source '{self._source}'"
                ),
                source=self._source,
                status_code=status,
            )
        if status != 200:
            raise ServerError(what, source=self._source, status_code=status)
        try:
            token = TokenPayload.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise MalformedResponseError(
                f"{VENDOR} token response has no usable access_token: {exc}",
                source=self._source,
                status_code=status,
            ) from None
        lifetime = token.expires_in if token.expires_in is not None else 3600.0
        self._token = token.access_token
        self._refresh_at = self._clock() + max(lifetime - TOKEN_MARGIN, lifetime / 2)
        self.tokens_fetched += 1

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._token is None or self._clock() >= self._refresh_at:
            token_response = yield self._token_request()
            await token_response.aread()
            self._accept(token_response)
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            # Revoked or expired early: one fresh token, one retry; a second 401 is real.
            token_response = yield self._token_request()
            await token_response.aread()
            self._accept(token_response)
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request


def _attributes(job: JobPayload) -> tuple[tuple[str, str], ...]:
    meta = job.meta
    if meta is None:
        return ()
    pairs = [
        ("x_request_id", meta.x_request_id),
        ("copied_from", meta.copied_from),
        ("hierarchy_id", meta.hierarchy_id),
        ("filter", meta.filter),
    ]
    out = [(k, v) for k, v in pairs if v]
    out.extend(("file_location", location) for location in meta.file_locations or ())
    return tuple(out)


def job_from_payload(job: JobPayload, source: str, base_url: str) -> Task:
    a = job.attributes
    return Task(
        source=source,
        task_id=job.id,
        status=a.status,
        phase=phase_of(a.status),
        kind=a.type,
        received_time=a.created_at,
        finished_time=a.completed_at,
        uri=f"{base_url}{JOBS_PATH}/{job.id}",
        attributes=_attributes(job),
    )


class ElasticPathClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        source_name: str,
        retry: RetryPolicy,
        page_limit: int = PAGE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source_name = source_name
        self.base_url = base_url.rstrip("/")
        self.page_limit = page_limit
        self.auth = ClientCredentialsAuth(
            self.base_url + TOKEN_PATH,
            client_id,
            client_secret,
            source=source_name,
            clock=clock,
        )
        self.transport = ApiTransport(
            http,
            base_url=self.base_url,
            auth=self.auth,
            source=source_name,
            vendor=VENDOR,
            credential_hint=f"Check the client credentials of source '{source_name}'",
            retry=retry,
        )

    def _malformed(self, what: str, exc: Exception) -> MalformedResponseError:
        return MalformedResponseError(
            f"{VENDOR} {what} has an unexpected shape: {exc}", source=self.source_name
        )

    async def list_page(self, offset: int) -> tuple[list[Task], bool, int]:
        """One page, newest first: (jobs, whether more pages exist, rejected entries)."""
        body = await self.transport.request_json(
            "GET",
            JOBS_PATH,
            endpoint="jobs.list",
            params={"page[limit]": str(self.page_limit), "page[offset]": str(offset)},
        )
        try:
            page = JobListPayload.model_validate(body)
        except ValidationError as exc:
            raise self._malformed("job listing", exc) from None
        jobs: list[Task] = []
        rejected = 0
        for entry in page.data:
            try:
                jobs.append(
                    job_from_payload(
                        JobPayload.model_validate(entry), self.source_name, self.base_url
                    )
                )
            except (ValidationError, ValueError) as exc:
                rejected += 1
                log.warning(
                    "api.task_rejected",
                    source=self.source_name,
                    entry=_excerpt(entry),
                    error=str(exc),
                )
        more = bool(page.links and page.links.next) or len(page.data) >= self.page_limit
        return jobs, more and bool(page.data), rejected

    async def get_job(self, job_id: str) -> Task:
        body = await self.transport.request_json(
            "GET", f"{JOBS_PATH}/{job_id}", endpoint="jobs.get"
        )
        try:
            return job_from_payload(
                JobDetailPayload.model_validate(body).data, self.source_name, self.base_url
            )
        except ValidationError as exc:
            raise self._malformed(f"job {job_id}", exc) from None

    async def get_errors(self, job_id: str) -> tuple[Problem, ...]:
        body = await self.transport.request_json(
            "GET", f"{JOBS_PATH}/{job_id}/errors", endpoint="jobs.errors"
        )
        try:
            errors = JobErrorsPayload.model_validate(body).data or []
        except ValidationError as exc:
            raise self._malformed(f"errors of job {job_id}", exc) from None
        # Job errors carry a message and no code.
        return tuple(Problem("", e.attributes.message) for e in errors if e.attributes.message)


def _excerpt(entry: Any) -> str:
    return repr(entry)[:200]


class ElasticPathSource:
    """The `Source` adapter for PCM jobs."""

    def __init__(self, client: ElasticPathClient) -> None:
        self._client = client

    @property
    def name(self) -> str:
        return self._client.source_name

    @property
    def transport(self) -> ApiTransport:
        return self._client.transport

    async def check(self) -> str:
        jobs, _, _ = await self._client.list_page(0)
        return f"token issued, jobs listed ({len(jobs)} on the first page)"

    async def details(self, task_id: str) -> TaskDetails:
        job = await self._client.get_job(task_id)
        errors = await self._client.get_errors(task_id) if job.phase is Phase.FAILED else ()
        return TaskDetails(job, errors=errors)

    async def observe(
        self, view: SourceView, now: datetime, *, overlap: timedelta, lookback: timedelta
    ) -> Observation:
        calls_before = self._client.transport.total_calls
        since = view.checkpoint - overlap if view.checkpoint is not None else now - lookback
        seen: dict[str, Task] = {}
        rejected = 0
        offset = 0
        for _ in range(MAX_PAGES):
            jobs, more, bad = await self._client.list_page(offset)
            rejected += bad
            recent = [j for j in jobs if j.received_time >= since]
            for job in recent:
                seen[job.task_id] = job
            if not more or len(recent) < len(jobs):
                break
            offset += len(jobs) + bad
        else:
            raise MalformedResponseError(
                f"{VENDOR} kept offering pages after {MAX_PAGES}", source=self.name
            )
        gone: set[str] = set()
        for open_job in view.open_tasks:
            if open_job.task_id in seen:
                continue
            try:
                seen[open_job.task_id] = await self._client.get_job(open_job.task_id)
            except NotFoundError:
                log.warning("task.vanished", source=self.name, task_id=open_job.task_id)
                gone.add(open_job.task_id)
        stale = sum(1 for t in view.open_tasks if t.received_time < since)
        return Observation(
            tasks=tuple(seen.values()),
            checkpoint=now,
            gone=frozenset(gone),
            strategy="detail" if stale else "none",
            api_calls=self._client.transport.total_calls - calls_before,
            rejected=rejected,
        )
