"""Digital River Product Admin API: the tasks client and its `Source` adapter.

Polling model, and why:

* New tasks: ``beginReceivedTime = checkpoint - overlap``, pages followed through
  ``nextPage.startingAfter``. ``endReceivedTime`` is never sent while polling: the docs
  call it a receivedTime filter in one place and a finishedTime filter in another, and the
  second reading would silently drop every open task. The server caps a listing at 30 days
  from ``beginReceivedTime``; its ``searchCriteria.endReceivedTime`` says what it covered,
  so long downtimes are caught up slice by slice and the checkpoint is in server time.
* Open tasks received before that window: either one ``GET /tasks/{id}`` each, or a
  re-listing of ``taskStatus=PUBLISHED,PROCESSING`` from the oldest one (then a GET for
  each task that left the open set). Whichever is cheaper for the current state wins.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import httpx
import structlog
from pydantic import ValidationError

from taskwarden.errors import InvalidRequestError, MalformedResponseError, NotFoundError
from taskwarden.model import Observation, Phase, Problem, Product, Task, TaskDetails
from taskwarden.sources.digitalriver_api import (
    ProblemPayload,
    TaskDetailPayload,
    TaskListPayload,
    TaskPayload,
)
from taskwarden.sources.http import (
    ApiTransport,
    BearerAuth,
    CallMeter,
    ResponseLimits,
    RetryPolicy,
    path_segment,
)
from taskwarden.sources.records import PageBudget, parse_each, summarise
from taskwarden.timeutil import format_api_time

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence
    from datetime import datetime

    from taskwarden.model import OpenTask, SourceView

log = structlog.get_logger(__name__)

VENDOR = "Digital River"
TASKS_PATH = "/v1/products/tasks"
MAX_LIMIT = 50
OPEN_STATUSES = ("PUBLISHED", "PROCESSING")
STATUS_PHASES = {
    "PUBLISHED": Phase.OPEN,
    "PROCESSING": Phase.RUNNING,
    "COMPLETED": Phase.SUCCEEDED,
    "FAILED": Phase.FAILED,
}
MAX_WINDOW = timedelta(days=30)
"""The listing returns at most 30 days of receivedTime per request."""
MAX_PAGES_PER_CYCLE = 3_000
"""Pages one cycle may read (150,000 tasks): a server that keeps handing out cursors
costs a bounded number of requests and bounded memory. Configurable per source."""

AuthScheme = Literal["basic", "bearer"]


def phase_of(status: str) -> Phase:
    return STATUS_PHASES.get(status.upper(), Phase.UNKNOWN)


def make_auth(scheme: AuthScheme, api_key: str) -> httpx.Auth:
    """Basic uses the API key as the user name with an empty password, as the docs show."""
    if scheme == "bearer":
        return BearerAuth(api_key)
    return httpx.BasicAuth(username=api_key, password="")


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Every query parameter of ``GET /v1/products/tasks``."""

    task_status: tuple[str, ...] = ()
    begin_received_time: datetime | None = None
    end_received_time: datetime | None = None
    limit: int = MAX_LIMIT
    starting_after: str | None = None
    ending_before: str | None = None
    product_id: str | None = None
    product_id_is_erid: bool = False
    """The product id is an external reference id: sends ``x-erid-as-pid: true``."""

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_LIMIT}, not {self.limit}")
        if self.starting_after and self.ending_before:
            raise InvalidRequestError("use either startingAfter or endingBefore, not both")

    def params(self) -> dict[str, str]:
        params: dict[str, str] = {"limit": str(self.limit)}
        if self.task_status:
            params["taskStatus"] = ",".join(self.task_status)
        if self.begin_received_time is not None:
            params["beginReceivedTime"] = format_api_time(self.begin_received_time)
        if self.end_received_time is not None:
            params["endReceivedTime"] = format_api_time(self.end_received_time)
        if self.starting_after:
            params["startingAfter"] = self.starting_after
        if self.ending_before:
            params["endingBefore"] = self.ending_before
        if self.product_id:
            params["productId"] = self.product_id
        return params

    def headers(self) -> dict[str, str]:
        return {"x-erid-as-pid": "true"} if self.product_id and self.product_id_is_erid else {}


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: tuple[Task, ...]
    total_size: int | None
    next_cursor: str | None
    previous_cursor: str | None
    window_begin: datetime | None
    window_end: datetime | None
    """``searchCriteria.endReceivedTime``: the end of the window the server listed."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Unusable records skipped, by reason."""


@dataclass(frozen=True, slots=True)
class Listing:
    tasks: tuple[Task, ...]
    window_end: datetime | None
    rejected: Counter[str]


def task_from_payload(payload: TaskPayload, source_name: str) -> Task:
    # Statuses, request types and product types repeat across 100k tasks: one copy each.
    return Task(
        source=source_name,
        task_id=payload.task_id,
        status=sys.intern(payload.task_status),
        phase=phase_of(payload.task_status),
        kind=sys.intern(payload.request_type),
        received_time=payload.received_time,
        finished_time=payload.finished_time,
        products=tuple(
            Product(
                p.product_id,
                p.external_reference_id,
                sys.intern(p.product_type) if p.product_type else None,
            )
            for p in payload.products
        ),
        uri=payload.uri,
    )


def parse_listing(body: object, source_name: str, *, page: int = 1) -> TaskPage:
    """A ``GET /v1/products/tasks`` body as a page of tasks.

    A wrong envelope is an error; a single unusable task is logged, counted and skipped, so
    that one bad entry cannot block every later poll.
    """
    try:
        envelope = TaskListPayload.model_validate(body)
    except ValidationError as exc:
        raise MalformedResponseError(
            f"{VENDOR} answered GET {TASKS_PATH} with JSON of the wrong shape: {summarise(exc)}",
            source=source_name,
        ) from exc
    tasks, rejected = parse_each(
        envelope.tasks,
        lambda item: task_from_payload(TaskPayload.model_validate(item), source_name),
        source=source_name,
        page=page,
        id_key="taskId",
    )
    criteria = envelope.search_criteria
    return TaskPage(
        tasks=tuple(tasks),
        total_size=envelope.total_size,
        next_cursor=envelope.next_page.starting_after if envelope.next_page else None,
        previous_cursor=envelope.previous_page.ending_before if envelope.previous_page else None,
        window_begin=criteria.begin_received_time if criteria else None,
        window_end=criteria.end_received_time if criteria else None,
        rejected=rejected,
    )


def _problems(items: Iterable[ProblemPayload]) -> tuple[Problem, ...]:
    return tuple(Problem(code=item.error_code, description=item.description) for item in items)


class DigitalRiverClient:
    """Async client for the Digital River tasks endpoints on a shared `httpx.AsyncClient`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        auth: httpx.Auth,
        source_name: str = "digitalriver",
        retry: RetryPolicy | None = None,
        limits: ResponseLimits | None = None,
        meter: CallMeter | None = None,
        max_pages: int = MAX_PAGES_PER_CYCLE,
    ) -> None:
        self.source_name = source_name
        self.max_pages = max_pages
        self.transport = ApiTransport(
            http,
            base_url=base_url,
            auth=auth,
            source=source_name,
            vendor=VENDOR,
            credential_hint=(
                f"Check the API key of source '{source_name}' (sources.{source_name}.api_key; "
                "HTTP 401 means the key, 403 the bearer token)."
            ),
            retry=retry or RetryPolicy(),
            limits=limits,
            meter=meter,
        )

    async def list_page(self, query: TaskQuery, *, page: int = 1) -> TaskPage:
        reply = await self.transport.request(
            "GET", TASKS_PATH, endpoint="list", params=query.params(), headers=query.headers()
        )
        return parse_listing(reply.body, self.source_name, page=page)

    async def iter_pages(
        self, query: TaskQuery, budget: PageBudget | None = None
    ) -> AsyncIterator[TaskPage]:
        """Every page of a listing, following ``nextPage.startingAfter`` whenever it is
        there: a page whose tasks were all unusable, or an empty one, does not end it."""
        budget = budget or PageBudget(self.max_pages, source=self.source_name)
        seen_cursors: set[str] = set()
        current = query
        while True:
            page = await self.list_page(current, page=budget.take())
            yield page
            cursor = page.next_cursor
            if not cursor:
                return
            if cursor in seen_cursors:
                raise MalformedResponseError(
                    f"{VENDOR} handed out the cursor {cursor!r} twice; the listing loops",
                    source=self.source_name,
                )
            seen_cursors.add(cursor)
            current = replace(current, starting_after=cursor, ending_before=None)

    async def list_all(self, query: TaskQuery, budget: PageBudget | None = None) -> Listing:
        tasks: list[Task] = []
        window_end: datetime | None = None
        rejected: Counter[str] = Counter()
        async for page in self.iter_pages(query, budget):
            tasks.extend(page.tasks)
            window_end = page.window_end or window_end
            rejected.update(page.rejected)
        return Listing(tuple(tasks), window_end, rejected)

    async def get_task(self, task_id: str) -> TaskDetails:
        path = f"{TASKS_PATH}/{path_segment(task_id)}"
        body = (await self.transport.request("GET", path, endpoint="detail")).body
        try:
            payload = TaskDetailPayload.model_validate(body)
        except ValidationError as exc:
            raise MalformedResponseError(
                f"{VENDOR} answered GET {path} with JSON of the wrong shape: {summarise(exc)}",
                source=self.source_name,
            ) from exc
        return TaskDetails(
            task=task_from_payload(payload, self.source_name),
            errors=_problems(payload.errors),
            deployment_errors=_problems(payload.deployment_errors),
            deployment_warnings=_problems(payload.deployment_warnings),
        )


@dataclass(slots=True)
class _Scan:
    """What one cycle's scan has found so far, and what it may still spend."""

    budget: PageBudget
    seen: dict[str, Task] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)


class DigitalRiverSource:
    """The `Source` adapter: plans and runs one poll of the tasks feed."""

    def __init__(self, client: DigitalRiverClient) -> None:
        self._client = client

    @property
    def name(self) -> str:
        return self._client.source_name

    async def details(self, task_id: str) -> TaskDetails:
        return await self._client.get_task(task_id)

    async def check(self) -> str:
        listing = await self._client.list_page(TaskQuery(limit=1))
        return f"listed tasks ({listing.total_size} in the default window)"

    async def observe(
        self, view: SourceView, now: datetime, *, overlap: timedelta, lookback: timedelta
    ) -> Observation:
        since = view.checkpoint - overlap if view.checkpoint is not None else now - lookback
        scan = _Scan(PageBudget(self._client.max_pages, source=self.name))
        checkpoint = await self._scan_received_since(scan, since, now, (), scan.seen)
        stale = [t for t in view.open_tasks if t.task_id not in scan.seen]
        strategy, gone = await self._refresh_open(scan, stale, view, since, now)
        return Observation(
            tasks=tuple(scan.seen.values()),
            # Server time, but never ahead of ours: a server clock running fast must not
            # make us skip what is received between our "now" and its.
            checkpoint=min(checkpoint, now),
            gone=frozenset(gone),
            strategy=strategy,
            rejected=scan.rejected,
        )

    async def _scan_received_since(
        self,
        scan: _Scan,
        since: datetime,
        now: datetime,
        statuses: tuple[str, ...],
        into: dict[str, Task],
    ) -> datetime:
        """List everything received since ``since``, slice by slice; returns the covered end."""
        begin = since
        while True:
            listing = await self._client.list_all(
                TaskQuery(task_status=statuses, begin_received_time=begin), scan.budget
            )
            scan.rejected.update(listing.rejected)
            for task in listing.tasks:
                into[task.task_id] = task
            end = listing.window_end or min(begin + MAX_WINDOW, now)
            if end <= begin:
                raise MalformedResponseError(
                    f"{VENDOR} reported a listing window ending at {format_api_time(end)}, "
                    f"not after its beginning {format_api_time(begin)}",
                    source=self.name,
                )
            # A window shorter than the cap means the server stopped at its own "now".
            if end >= now or end - begin < MAX_WINDOW:
                return end
            begin = end

    async def _refresh_open(
        self,
        scan: _Scan,
        stale: Sequence[OpenTask],
        view: SourceView,
        since: datetime,
        now: datetime,
    ) -> tuple[str, set[str]]:
        if not stale:
            return "none", set()
        oldest = min(t.received_time for t in stale)
        slices = max(1, math.ceil((since - oldest) / MAX_WINDOW))
        open_in_range = sum(1 for t in view.open_tasks if t.received_time >= oldest)
        relist_cost = slices + math.ceil(open_in_range / MAX_LIMIT)
        if relist_cost >= len(stale):
            gone = await self._fetch_each(scan, [t.task_id for t in stale])
            return "detail", gone
        found: dict[str, Task] = {}
        await self._scan_received_since(scan, oldest, now, OPEN_STATUSES, found)
        for task_id, task in found.items():
            scan.seen.setdefault(task_id, task)
        left_open_set = [t.task_id for t in stale if t.task_id not in found]
        gone = await self._fetch_each(scan, left_open_set)
        return "relist", gone

    async def _fetch_each(self, scan: _Scan, task_ids: Sequence[str]) -> set[str]:
        """Refresh tasks one by one; one whose answer is unusable stays as it was (and is
        tried again next cycle) instead of failing the cycle for every other task."""
        gone: set[str] = set()
        for task_id in task_ids:
            try:
                scan.seen[task_id] = (await self._client.get_task(task_id)).task
            except NotFoundError:
                log.warning("task.vanished", source=self.name, task_id=task_id)
                gone.add(task_id)
            except (MalformedResponseError, InvalidRequestError) as exc:
                scan.rejected["detail:unusable"] += 1
                log.warning(
                    "api.record_rejected",
                    source=self.name,
                    task_id=task_id,
                    reason="detail:unusable",
                    error=str(exc),
                )
        return gone
