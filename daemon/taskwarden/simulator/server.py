"""The simulator's HTTP server: vendor endpoints, fault injection and the control API."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import random
from collections import Counter
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from taskwarden.httpserver import serve_app
from taskwarden.simulator.faults import Fault, FaultQueue
from taskwarden.simulator.hostile import HOSTILE
from taskwarden.simulator.taskstore import (
    DR_STATUSES,
    SimTask,
    TaskTable,
    generate_tasks,
    new_task_id,
    task_json,
)
from taskwarden.timeutil import format_api_time, from_epoch_ms, parse_api_time, to_epoch_ms

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_LIMIT = 50
ROUTE_KEY = web.AppKey("route_names", dict)


def _fmt(ms: int) -> str:
    return format_api_time(from_epoch_ms(ms))


def dr_error(
    status: int, kind: str, code: str, message: str, parameter: str | None = None
) -> web.Response:
    error: dict[str, str] = {"code": code, "message": message}
    if parameter:
        error["parameter"] = parameter
    return web.json_response({"type": kind, "errors": [error]}, status=status)


class BadParameterError(Exception):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class Simulator:
    """Vendor API state plus the aiohttp application that serves it."""

    def __init__(self, *, api_key: str = "sim-api-key", seed: int = 1) -> None:
        self.api_key = api_key
        self.tasks = TaskTable()
        self.faults = FaultQueue()
        self.requests: Counter[str] = Counter()
        """Vendor API requests per route name (``dr.list``, ``dr.detail`` …), faults included."""
        self.request_log: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.rng = random.Random(seed)
        self._frozen_ms: int | None = None
        self.base_url = ""
        self.extensions: list[Callable[[Simulator, web.Application], None]] = []
        self.compression: str | None = None
        """``gzip`` or ``deflate``: every answer compressed, as many real servers do."""
        self.advance_per_request: timedelta | None = None
        """With a frozen clock: how much time each vendor request costs (retries cost time
        even in a test)."""

    # --- time -------------------------------------------------------------------------

    def now_ms(self) -> int:
        if self._frozen_ms is not None:
            return self._frozen_ms
        return to_epoch_ms(datetime.now(tz=UTC))

    def now(self) -> datetime:
        return from_epoch_ms(self.now_ms())

    def freeze_clock(self, moment: datetime) -> None:
        self._frozen_ms = to_epoch_ms(moment)

    def advance_clock(self, delta: timedelta) -> None:
        self._frozen_ms = self.now_ms() + int(delta.total_seconds() * 1000)

    def unfreeze_clock(self) -> None:
        self._frozen_ms = None

    # --- test and demo control ----------------------------------------------------------

    def add_task(
        self,
        *,
        status: str = "PUBLISHED",
        request_type: str = "CREATE_PRODUCT",
        received: datetime | None = None,
        products: list[dict[str, str]] | None = None,
        task_id: str | None = None,
    ) -> SimTask:
        received_ms = to_epoch_ms(received) if received is not None else self.now_ms()
        task = SimTask(
            task_id=task_id or new_task_id(self.rng),
            status=status,
            request_type=request_type,
            received_ms=received_ms,
            finished_ms=None if status in ("PUBLISHED", "PROCESSING") else received_ms + 500,
            products=products
            if products is not None
            else [
                {
                    "productId": str(self.rng.randint(10**10, 10**11)),
                    "externalReferenceId": f"sku-{self.rng.randint(1000, 9999)}",
                    "productType": "INDIVIDUAL",
                }
            ],
        )
        self.tasks.add(task)
        return task

    def set_status(
        self,
        task_id: str,
        status: str,
        *,
        errors: list[dict[str, str]] | None = None,
        deployment_errors: list[dict[str, str]] | None = None,
        deployment_warnings: list[dict[str, str]] | None = None,
    ) -> SimTask:
        now = self.now_ms()
        task = self.tasks.set_status(task_id, status, now)
        task.finished_ms = None if status in ("PUBLISHED", "PROCESSING") else now
        if errors is not None:
            task.errors = errors
        if deployment_errors is not None:
            task.deployment_errors = deployment_errors
        if deployment_warnings is not None:
            task.deployment_warnings = deployment_warnings
        return task

    def generate(
        self,
        count: int,
        *,
        begin: datetime,
        end: datetime,
        open_share: float = 0.0,
        failed_share: float = 0.05,
    ) -> list[SimTask]:
        tasks = generate_tasks(
            count,
            begin_ms=to_epoch_ms(begin),
            end_ms=to_epoch_ms(end),
            rng=self.rng,
            open_share=open_share,
            failed_share=failed_share,
        )
        self.tasks.add_many(tasks)
        return tasks

    def inject(self, fault: Fault) -> None:
        self.faults.add(fault)

    # --- the application --------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._clock_middleware, self._faults_middleware])
        app.router.add_get("/v1/products/tasks", self._dr_list, name="dr.list")
        app.router.add_get("/v1/products/tasks/", self._dr_list, name="dr.list_slash")
        app.router.add_get("/v1/products/tasks/{task_id}", self._dr_detail, name="dr.detail")
        app.router.add_post("/_sim/tasks", self._ctl_add_tasks)
        app.router.add_post("/_sim/tasks/{task_id}/status", self._ctl_set_status)
        app.router.add_post("/_sim/generate", self._ctl_generate)
        app.router.add_post("/_sim/faults", self._ctl_fault)
        app.router.add_post("/_sim/clock", self._ctl_clock)
        app.router.add_get("/_sim/stats", self._ctl_stats)
        for extend in self.extensions:
            extend(self, app)
        return app

    @web.middleware
    async def _clock_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer's ``Date`` is the simulator's clock, as a real server's is its own."""
        response = await handler(request)
        if not response.prepared:
            response.headers["Date"] = email.utils.format_datetime(self.now(), usegmt=True)
            if self.compression is not None and isinstance(response, web.Response):
                response.enable_compression(web.ContentCoding(self.compression))
        return response

    @web.middleware
    async def _faults_middleware(  # noqa: PLR0911 - one early answer per fault kind
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        if not route or route.startswith("_") or request.path.startswith("/_sim/"):
            return await handler(request)
        route = route.removesuffix("_slash")
        self.requests[route] += 1
        if self.advance_per_request is not None and self._frozen_ms is not None:
            self.advance_clock(self.advance_per_request)
        self.request_log.append((route, dict(request.query), dict(request.headers)))
        fault = self.faults.take(route)
        if fault is None:
            return await handler(request)
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return await handler(request)
        if fault.kind == "rate_limit":
            headers = (
                {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            )
            response = dr_error(429, "too_many_requests", "too_many_requests", "Slow down.")
            response.headers.update(headers)
            return response
        if fault.kind == "server_error":
            response = dr_error(
                fault.status, "internal_server_error", "internal_error", "Try again later."
            )
            if fault.retry_after is not None:
                response.headers["Retry-After"] = f"{fault.retry_after:g}"
            return response
        if fault.kind == "malformed":
            return web.Response(
                status=200,
                text="<html>upstream proxy error</html>",
                content_type="application/json",
            )
        if fault.kind == "wrong_shape":
            return web.json_response({"tasks": "not-a-list", "data": 42})
        if fault.kind in HOSTILE:
            return await HOSTILE[fault.kind](self, request, handler, fault)
        # drop: close the socket without answering.
        if request.transport is not None:
            request.transport.abort()
        raise web.HTTPServiceUnavailable

    def _authorised(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            if value == self.api_key:
                return None
            return dr_error(403, "forbidden", "forbidden", "The token is invalid.")
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(value).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                user = ""
            if user == self.api_key:
                return None
        return dr_error(401, "unauthorized", "unauthorized", "The API key is invalid.")

    async def _dr_list(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        try:
            return self._dr_list_page(request)
        except BadParameterError as exc:
            return dr_error(400, "bad_request", "invalid_parameter", str(exc), exc.parameter)

    def _dr_list_page(self, request: web.Request) -> web.Response:
        query = request.query
        statuses = self._statuses(query.get("taskStatus"))
        limit = self._limit(query.get("limit"))
        after_id, before_id = query.get("startingAfter"), query.get("endingBefore")
        if after_id and before_id:
            raise BadParameterError(
                "startingAfter", "Use either startingAfter or endingBefore, not both."
            )
        now = self.now_ms()
        begin = self._time(query, "beginReceivedTime")
        end = self._time(query, "endReceivedTime")
        if begin is None and end is None:
            end = now
            begin = end - WINDOW_MS
        elif begin is None:
            assert end is not None
            begin = end - WINDOW_MS
        elif end is None:
            end = min(begin + WINDOW_MS, now)
        end = min(end, begin + WINDOW_MS)
        if end < begin:
            raise BadParameterError(
                "endReceivedTime", "endReceivedTime must not be before beginReceivedTime."
            )
        product_id = query.get("productId")
        by_erid = request.headers.get("x-erid-as-pid", "").lower() == "true"
        after = self._cursor(after_id, "startingAfter")
        before = self._cursor(before_id, "endingBefore")
        page = self.tasks.query(
            statuses=statuses,
            begin_ms=begin,
            end_ms=end,
            limit=limit,
            after=after,
            before=before,
            product=(product_id, by_erid) if product_id else None,
        )
        criteria: dict[str, Any] = {
            "beginReceivedTime": _fmt(begin),
            "endReceivedTime": _fmt(end),
            "taskStatus": list(statuses),
        }
        if product_id:
            criteria["productId"] = product_id
        pagination: dict[str, Any] = {"limit": limit}
        if after_id:
            pagination["startingAfter"] = after_id
        if before_id:
            pagination["endingBefore"] = before_id
        body: dict[str, Any] = {
            "tasks": [task_json(t, self.base_url, detail=False, fmt=_fmt) for t in page.tasks],
            "totalSize": page.total,
        }
        if page.has_before and page.tasks:
            body["previousPage"] = {"endingBefore": page.tasks[0].task_id}
        if page.has_after and page.tasks:
            body["nextPage"] = {"startingAfter": page.tasks[-1].task_id}
        body["searchCriteria"] = criteria
        body["pagination"] = pagination
        return web.json_response(body)

    @staticmethod
    def _statuses(raw: str | None) -> tuple[str, ...]:
        if not raw:
            return DR_STATUSES
        statuses = tuple(dict.fromkeys(s.strip().upper() for s in raw.split(",") if s.strip()))
        unknown = [s for s in statuses if s not in DR_STATUSES]
        if unknown or not statuses:
            raise BadParameterError(
                "taskStatus", f"Invalid taskStatus value(s): {', '.join(unknown) or raw!r}."
            )
        return statuses

    @staticmethod
    def _limit(raw: str | None) -> int:
        if raw is None:
            return MAX_LIMIT
        try:
            limit = int(raw)
        except ValueError:
            raise BadParameterError("limit", f"limit must be an integer, not {raw!r}.") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadParameterError("limit", f"limit must be between 1 and {MAX_LIMIT}.")
        return limit

    @staticmethod
    def _time(query: Any, name: str) -> int | None:
        raw = query.get(name)
        if raw is None:
            return None
        try:
            return to_epoch_ms(parse_api_time(raw))
        except ValueError:
            raise BadParameterError(
                name, f"{name} must be an ISO-8601 UTC date-time, not {raw!r}."
            ) from None

    def _cursor(self, task_id: str | None, name: str) -> tuple[int, str] | None:
        if not task_id:
            return None
        task = self.tasks.by_id.get(task_id)
        if task is None:
            raise BadParameterError(name, f"{name} names an unknown task {task_id!r}.")
        return task.key

    async def _dr_detail(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        task = self.tasks.by_id.get(request.match_info["task_id"])
        if task is None:
            return dr_error(404, "not_found", "not_found", "The task was not found.")
        return web.json_response(task_json(task, self.base_url, detail=True, fmt=_fmt))

    # --- control endpoints (the demo, subprocess tests, `taskwarden simulate`) -----------

    async def _ctl_add_tasks(self, request: web.Request) -> web.Response:
        payload = await request.json()
        items = payload if isinstance(payload, list) else [payload]
        created = []
        for item in items:
            received = item.get("receivedTime")
            task = self.add_task(
                status=item.get("taskStatus", "PUBLISHED"),
                request_type=item.get("requestType", "CREATE_PRODUCT"),
                received=parse_api_time(received) if received else None,
                products=item.get("products"),
                task_id=item.get("taskId"),
            )
            created.append(task_json(task, self.base_url, detail=True, fmt=_fmt))
        return web.json_response(created, status=201)

    async def _ctl_set_status(self, request: web.Request) -> web.Response:
        payload = await request.json()
        task_id = request.match_info["task_id"]
        if task_id not in self.tasks.by_id:
            return web.json_response({"error": f"no task {task_id}"}, status=404)
        task = self.set_status(
            task_id,
            payload["taskStatus"],
            errors=payload.get("errors"),
            deployment_errors=payload.get("deploymentErrors"),
            deployment_warnings=payload.get("deploymentWarnings"),
        )
        return web.json_response(task_json(task, self.base_url, detail=True, fmt=_fmt))

    async def _ctl_generate(self, request: web.Request) -> web.Response:
        payload = await request.json()
        end = parse_api_time(payload["end"]) if "end" in payload else self.now()
        begin = parse_api_time(payload["begin"]) if "begin" in payload else end - timedelta(days=29)
        tasks = self.generate(
            int(payload["count"]),
            begin=begin,
            end=end,
            open_share=float(payload.get("openShare", 0.0)),
            failed_share=float(payload.get("failedShare", 0.05)),
        )
        return web.json_response({"generated": len(tasks), "total": len(self.tasks)}, status=201)

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        payload = await request.json()
        try:
            self.inject(
                Fault(
                    kind=payload["kind"],
                    remaining=int(payload.get("count", 1)),
                    retry_after=payload.get("retryAfter"),
                    status=int(payload.get("status", 500)),
                    delay=float(payload.get("delay", 0.0)),
                    endpoint=payload.get("endpoint", "any"),
                    size=int(payload.get("size", 0)),
                    records=payload.get("records"),
                    append=bool(payload.get("append", False)),
                    patch=payload.get("patch"),
                )
            )
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"pending": len(self.faults)}, status=201)

    async def _ctl_clock(self, request: web.Request) -> web.Response:
        payload = await request.json()
        if payload.get("real"):
            self.unfreeze_clock()
        elif "now" in payload:
            self.freeze_clock(parse_api_time(payload["now"]))
        elif "advanceSeconds" in payload:
            self.advance_clock(timedelta(seconds=float(payload["advanceSeconds"])))
        return web.json_response({"now": _fmt(self.now_ms())})

    async def _ctl_stats(self, _request: web.Request) -> web.Response:
        by_status = Counter(t.status for t in self.tasks.by_id.values())
        return web.json_response(
            {
                "requests": dict(self.requests),
                "tasks": len(self.tasks),
                "tasksByStatus": dict(by_status),
                "transitions": len(self.tasks.transitions),
                "pendingFaults": len(self.faults),
                "now": _fmt(self.now_ms()),
            }
        )


@asynccontextmanager
async def running_simulator(
    simulator: Simulator | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Simulator]:
    """Serve ``simulator`` on loopback for the duration of the block; ``.base_url`` is set."""
    sim = simulator or Simulator()
    async with serve_app(sim.app(), host=host, port=port) as base_url:
        sim.base_url = base_url
        yield sim
