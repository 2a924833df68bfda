"""The simulator's Digital River task table, indexed for fast windowed, cursor listings."""

from __future__ import annotations

import bisect
import heapq
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import random

Key = tuple[int, str]
"""(receivedTime in epoch ms, taskId): the listing order."""

DR_STATUSES = ("PUBLISHED", "PROCESSING", "COMPLETED", "FAILED")
DR_REQUEST_TYPES = (
    "CREATE_PRODUCT",
    "CREATE_VARIATION",
    "UPDATE_PRODUCT",
    "UPDATE_VARIATION",
    "DELETE_VARIATION",
    "DELETE_LOCALE",
    "DEPLOY_PRODUCT",
    "RETIRE_PRODUCT",
    "UPDATE_PRODUCT_LIVE_CHANGE",
    "UPDATE_VARIATION_LIVE_CHANGE",
)


@dataclass(slots=True)
class SimTask:
    task_id: str
    status: str
    request_type: str
    received_ms: int
    finished_ms: int | None = None
    products: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    deployment_errors: list[dict[str, str]] = field(default_factory=list)
    deployment_warnings: list[dict[str, str]] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return (self.received_ms, self.task_id)


@dataclass(frozen=True, slots=True)
class Transition:
    task_id: str
    old: str
    new: str
    at_ms: int


@dataclass(slots=True)
class PageResult:
    tasks: list[SimTask]
    total: int
    has_before: bool
    has_after: bool


class TaskTable:
    """Tasks kept in one sorted key list per status, so a page costs O(limit · statuses)."""

    def __init__(self) -> None:
        self.by_id: dict[str, SimTask] = {}
        self._keys: dict[str, list[Key]] = {}
        self.transitions: list[Transition] = []

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, task: SimTask) -> None:
        if task.task_id in self.by_id:
            raise ValueError(f"task {task.task_id} already exists")
        self.by_id[task.task_id] = task
        bisect.insort(self._keys.setdefault(task.status, []), task.key)

    def add_many(self, tasks: list[SimTask]) -> None:
        """Bulk insert: one sort per status instead of one insort per task."""
        for task in tasks:
            if task.task_id in self.by_id:
                raise ValueError(f"task {task.task_id} already exists")
            self.by_id[task.task_id] = task
            self._keys.setdefault(task.status, []).append(task.key)
        for keys in self._keys.values():
            keys.sort()

    def set_status(self, task_id: str, status: str, at_ms: int) -> SimTask:
        task = self.by_id[task_id]
        old = task.status
        if old != status:
            keys = self._keys[old]
            del keys[bisect.bisect_left(keys, task.key)]
            bisect.insort(self._keys.setdefault(status, []), task.key)
            task.status = status
            self.transitions.append(Transition(task_id, old, status, at_ms))
        return task

    def query(
        self,
        *,
        statuses: tuple[str, ...],
        begin_ms: int,
        end_ms: int,
        limit: int,
        after: Key | None = None,
        before: Key | None = None,
        product: tuple[str, bool] | None = None,
    ) -> PageResult:
        lists = self._candidate_lists(statuses, begin_ms, end_ms, product)
        total = sum(hi - lo for _, lo, hi in lists)
        if before is not None:
            chunks = []
            for keys, lo, hi in lists:
                stop = max(lo, min(hi, bisect.bisect_left(keys, before)))
                chunks.append(keys[max(lo, stop - limit - 1) : stop])
            merged = list(heapq.merge(*chunks))
            page, has_before = merged[-limit:], len(merged) > limit
            has_after = bool(page) and any(
                bisect.bisect_right(keys, page[-1], lo, hi) < hi for keys, lo, hi in lists
            )
        else:
            chunks = []
            for keys, lo, hi in lists:
                start = lo if after is None else max(lo, bisect.bisect_right(keys, after, lo, hi))
                chunks.append(keys[start : min(hi, start + limit + 1)])
            merged = list(heapq.merge(*chunks))
            page, has_after = merged[:limit], len(merged) > limit
            has_before = bool(page) and any(
                bisect.bisect_left(keys, page[0], lo, hi) > lo for keys, lo, hi in lists
            )
        return PageResult([self.by_id[k[1]] for k in page], total, has_before, has_after)

    def _candidate_lists(
        self,
        statuses: tuple[str, ...],
        begin_ms: int,
        end_ms: int,
        product: tuple[str, bool] | None,
    ) -> list[tuple[list[Key], int, int]]:
        lists = []
        for status in statuses:
            keys = self._keys.get(status, [])
            lo = bisect.bisect_left(keys, (begin_ms, ""))
            hi = bisect.bisect_right(keys, (end_ms, "\U0010ffff"))
            lists.append((keys, lo, hi))
        if product is None:
            return lists
        wanted, by_erid = product
        field_name = "externalReferenceId" if by_erid else "productId"
        matching = sorted(
            k
            for keys, lo, hi in lists
            for k in keys[lo:hi]
            if any(p.get(field_name) == wanted for p in self.by_id[k[1]].products)
        )
        return [(matching, 0, len(matching))]


def new_task_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate_tasks(
    count: int,
    *,
    begin_ms: int,
    end_ms: int,
    rng: random.Random,
    open_share: float = 0.0,
    failed_share: float = 0.05,
) -> list[SimTask]:
    """``count`` tasks received evenly between ``begin_ms`` and ``end_ms``."""
    span = max(1, end_ms - begin_ms)
    tasks = []
    for index in range(count):
        received = begin_ms + (span * index) // max(1, count)
        roll = rng.random()
        if roll < open_share:
            status, finished = rng.choice(("PUBLISHED", "PROCESSING")), None
        elif roll < open_share + failed_share:
            status, finished = "FAILED", received + rng.randint(100, 5_000)
        else:
            status, finished = "COMPLETED", received + rng.randint(100, 5_000)
        product_id = str(50_000_000_000 + rng.randint(0, 9_999_999) * 10)
        tasks.append(
            SimTask(
                task_id=new_task_id(rng),
                status=status,
                request_type=rng.choice(DR_REQUEST_TYPES),
                received_ms=received,
                finished_ms=finished,
                products=[
                    {
                        "productId": product_id,
                        "externalReferenceId": f"erid-{product_id}",
                        "productType": "INDIVIDUAL",
                    }
                ],
            )
        )
    return tasks


def task_json(task: SimTask, base_url: str, *, detail: bool, fmt: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "taskId": task.task_id,
        "products": task.products,
        "requestType": task.request_type,
        "taskStatus": task.status,
        "receivedTime": fmt(task.received_ms),
    }
    if task.finished_ms is not None:
        body["finishedTime"] = fmt(task.finished_ms)
    body["uri"] = f"{base_url}/v1/products/tasks/{task.task_id}"
    if detail:
        body["errors"] = task.errors
        body["deploymentErrors"] = task.deployment_errors
        body["deploymentWarnings"] = task.deployment_warnings
    return body
