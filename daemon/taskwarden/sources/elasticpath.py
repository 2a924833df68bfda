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
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import structlog
from pydantic import ValidationError

from taskwarden.errors import (
    AuthenticationError,
    InvalidRequestError,
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
from taskwarden.sources.http import (
    ApiTransport,
    CallMeter,
    ResponseLimits,
    RetryPolicy,
    describe_error_body,
    path_segment,
    with_hint,
)
from taskwarden.sources.records import PageBudget, parse_each, summarise

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterable
    from datetime import datetime

    from taskwarden.model import SourceView

log = structlog.get_logger(__name__)

VENDOR = "Elastic Path"
JOBS_PATH = "/pcm/jobs"
TOKEN_PATH = "/oauth/access_token"  # noqa: S105 - a URL path, not a secret
PAGE_LIMIT = 100
MAX_PAGES = 3_000
"""Pages one cycle may read (configurable per source): bounded requests and memory."""
STATUS_PHASES = {
    "pending": Phase.OPEN,
    "started": Phase.RUNNING,
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
        said = describe_error_body(response.content, response.reason_phrase)
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


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: tuple[Task, ...]
    more: bool
    """The server offers another page."""
    entries: int
    """Entries on the page, usable or not (the next page's offset moves by this)."""
    rejected: Counter[str]
    server_time: datetime | None
    """The server's ``Date``: its clock, which ``created_at`` is written in."""


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
        limits: ResponseLimits | None = None,
        meter: CallMeter | None = None,
        max_pages: int = MAX_PAGES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source_name = source_name
        self.base_url = base_url.rstrip("/")
        self.page_limit = page_limit
        self.max_pages = max_pages
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
            limits=limits,
            meter=meter,
        )

    def _malformed(self, what: str, exc: ValidationError) -> MalformedResponseError:
        return MalformedResponseError(
            f"{VENDOR} {what} has an unexpected shape: {summarise(exc)}", source=self.source_name
        )

    async def list_page(self, offset: int, *, page: int = 1) -> JobPage:
        """One page of the listing (whose order the docs do not state)."""
        reply = await self.transport.request(
            "GET",
            JOBS_PATH,
            endpoint="jobs.list",
            params={"page[limit]": str(self.page_limit), "page[offset]": str(offset)},
        )
        try:
            listing = JobListPayload.model_validate(reply.body)
        except ValidationError as exc:
            raise self._malformed("job listing", exc) from None
        jobs, rejected = parse_each(
            listing.data,
            lambda entry: job_from_payload(
                JobPayload.model_validate(entry), self.source_name, self.base_url
            ),
            source=self.source_name,
            page=page,
            id_key="id",
        )
        entries = len(listing.data)
        more = bool(listing.links and listing.links.next) or entries >= self.page_limit
        return JobPage(tuple(jobs), more and entries > 0, entries, rejected, reply.server_time)

    async def get_job(self, job_id: str) -> Task:
        path = f"{JOBS_PATH}/{path_segment(job_id)}"
        body = (await self.transport.request("GET", path, endpoint="jobs.get")).body
        try:
            return job_from_payload(
                JobDetailPayload.model_validate(body).data, self.source_name, self.base_url
            )
        except ValidationError as exc:
            raise self._malformed(f"job {job_id!r}", exc) from None

    async def get_errors(self, job_id: str) -> tuple[Problem, ...]:
        path = f"{JOBS_PATH}/{path_segment(job_id)}/errors"
        body = (await self.transport.request("GET", path, endpoint="jobs.errors")).body
        try:
            errors = JobErrorsPayload.model_validate(body).data or []
        except ValidationError as exc:
            raise self._malformed(f"errors of job {job_id!r}", exc) from None
        # Job errors carry a message and no code.
        return tuple(Problem("", e.attributes.message) for e in errors if e.attributes.message)


class ElasticPathSource:
    """The `Source` adapter for PCM jobs.

    The docs state no order for ``GET /pcm/jobs`` (their example is unsorted), so paging
    stops early only once this process has seen a complete listing come newest first; until
    then, and again after any page breaks that order, every page is read. The checkpoint is
    in the vendor's clock (``Date`` of the first listing call), never ours alone.
    """

    def __init__(self, client: ElasticPathClient) -> None:
        self._client = client
        self._newest_first = False
        """Established by a complete newest-first listing; lost by any page that is not."""
        self._skew_warned: float | None = None

    @property
    def name(self) -> str:
        return self._client.source_name

    async def check(self) -> str:
        first = await self._client.list_page(0)
        return f"token issued, jobs listed ({len(first.jobs)} on the first page)"

    async def details(self, task_id: str) -> TaskDetails:
        job = await self._client.get_job(task_id)
        errors = await self._client.get_errors(task_id) if job.phase is Phase.FAILED else ()
        return TaskDetails(job, errors=errors)

    async def observe(
        self, view: SourceView, now: datetime, *, overlap: timedelta, lookback: timedelta
    ) -> Observation:
        budget = PageBudget(self._client.max_pages, source=self.name)
        rejected: Counter[str] = Counter()
        listed: dict[str, Task] = {}
        since: datetime | None = None
        server_time: datetime | None = None
        ordered = True
        previous: datetime | None = None
        offset = 0
        while True:
            page = await self._client.list_page(offset, page=budget.take())
            rejected.update(page.rejected)
            if since is None:
                server_time = page.server_time
                self._note_skew(server_time, now, overlap)
                since = (
                    view.checkpoint - overlap
                    if view.checkpoint is not None
                    else (server_time or now) - lookback
                )
            for job in page.jobs:
                listed.setdefault(job.task_id, job)
                if previous is not None and job.received_time > previous:
                    ordered = False
                previous = job.received_time
            reached_older = any(j.received_time < since for j in page.jobs)
            if not page.more or (self._newest_first and ordered and reached_older):
                break
            offset += page.entries
        complete = not page.more
        self._learn_order(ordered=ordered, complete=complete, jobs=len(listed))
        assert since is not None
        seen = {k: j for k, j in listed.items() if j.received_time >= since}
        gone: set[str] = set()
        refreshed = 0
        for open_job in view.open_tasks:
            if open_job.task_id in seen:
                continue
            if complete and open_job.task_id in listed:
                seen[open_job.task_id] = listed[open_job.task_id]
                continue
            refreshed += 1
            try:
                seen[open_job.task_id] = await self._client.get_job(open_job.task_id)
            except NotFoundError:
                log.warning("task.vanished", source=self.name, task_id=open_job.task_id)
                gone.add(open_job.task_id)
            except (MalformedResponseError, InvalidRequestError) as exc:
                rejected["detail:unusable"] += 1
                log.warning(
                    "api.record_rejected",
                    source=self.name,
                    task_id=open_job.task_id,
                    reason="detail:unusable",
                    error=str(exc),
                )
        return Observation(
            tasks=tuple(seen.values()),
            checkpoint=self._checkpoint(server_time, listed.values(), view, since),
            gone=frozenset(gone),
            strategy="detail" if refreshed else ("listing" if view.open_tasks else "none"),
            rejected=rejected,
        )

    @staticmethod
    def _checkpoint(
        server_time: datetime | None,
        listed: Iterable[Task],
        view: SourceView,
        since: datetime,
    ) -> datetime:
        """Everything created before this moment (vendor clock) has been listed.

        The ``Date`` of the first listing call (one-second resolution, so a second less);
        without one, the newest ``created_at`` seen; without either, no progress."""
        if server_time is not None:
            return server_time - timedelta(seconds=1)
        newest = max((j.received_time for j in listed), default=None)
        candidates = [c for c in (newest, view.checkpoint) if c is not None]
        return max(candidates, default=since)

    def _learn_order(self, *, ordered: bool, complete: bool, jobs: int) -> None:
        if not ordered and self._newest_first:
            self._newest_first = False
            log.warning(
                "source.listing_order_lost",
                source=self.name,
                consequence="every page is read until a complete listing is newest first again",
            )
        elif ordered and complete and jobs >= 2 and not self._newest_first:
            self._newest_first = True
            log.info("source.listing_order_established", source=self.name, order="newest first")

    def _note_skew(self, server_time: datetime | None, now: datetime, overlap: timedelta) -> None:
        """Warn when our clock and the vendor's disagree by more than a quarter of the
        overlap (once, and again when the skew changes by as much)."""
        if server_time is None:
            return
        skew = (now - server_time).total_seconds()
        tolerance = overlap.total_seconds() / 4
        if abs(skew) <= tolerance + 1:
            return
        if self._skew_warned is not None and abs(skew - self._skew_warned) <= tolerance:
            return
        self._skew_warned = skew
        log.warning(
            "source.clock_skew",
            source=self.name,
            local_minus_vendor_seconds=round(skew, 1),
            overlap_seconds=overlap.total_seconds(),
            effect="the checkpoint follows the vendor's clock; check NTP on this host",
        )
