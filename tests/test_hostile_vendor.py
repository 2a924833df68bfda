"""A hostile vendor endpoint: every poll ends as done or as a recorded failure, in bounded
time and memory, and one unusable record never costs the rest (issue 11, items 1-4).

The simulator serves the hostile answers (`taskwarden.simulator.hostile`) over real
sockets; time is the simulator's frozen clock.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from taskwarden.alerting import Alerting
from taskwarden.errors import MalformedResponseError, NotFoundError, RateLimitedError
from taskwarden.poller import CycleReport, PollFailed, PollSettings, poll_or_report
from taskwarden.simulator.faults import Fault
from taskwarden.sources.digitalriver import (
    DigitalRiverClient,
    DigitalRiverSource,
    TaskQuery,
    make_auth,
)
from taskwarden.sources.elasticpath import ElasticPathSource
from taskwarden.sources.http import ResponseLimits, RetryPolicy

from .conftest import API_KEY, FAST_RETRY

if TYPE_CHECKING:
    import httpx

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.elasticpath import ElasticPathJobs
    from taskwarden.sources.base import Source
    from taskwarden.sources.elasticpath import ElasticPathClient
    from taskwarden.state import SqliteStateStore

POLL = PollSettings(overlap=timedelta(minutes=5), initial_lookback=timedelta(hours=1))


async def poll(
    source: Source, store: SqliteStateStore, sim: Simulator, settings: PollSettings = POLL
) -> CycleReport | PollFailed:
    sim.advance_clock(timedelta(minutes=1))
    return await poll_or_report(source, store, settings, sim.now, alerting=Alerting())


def dr_task(task_id: Any, received: Any = "2026-03-01T11:59:00.000Z") -> dict[str, Any]:
    return {"taskId": task_id, "taskStatus": "FAILED", "receivedTime": received}


UNUSABLE_TASKS = {
    "receivedTime past year 9999 in UTC": dr_task("t-late", "9999-12-31T23:59:59-01:00"),
    "receivedTime before year 1 in UTC": dr_task("t-early", "0001-01-01T00:00:00+01:00"),
    "a null item": None,
    "a task id with CR/LF": dr_task("t-1\r\nX-Injected: yes"),
    "a number where an object belongs": 42,
    "no receivedTime": {"taskId": "t-none", "taskStatus": "FAILED"},
}


@pytest.mark.parametrize("record", UNUSABLE_TASKS.values(), ids=UNUSABLE_TASKS.keys())
async def test_one_unusable_task_is_rejected_counted_and_the_poll_succeeds(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore, record: Any
) -> None:
    good = [
        sim.add_task(status="FAILED", received=sim.now() - timedelta(minutes=i)) for i in (1, 2)
    ]
    sim.inject(Fault("mangle", records=[record], append=True, endpoint="dr.list"))
    with structlog.testing.capture_logs() as logs:
        report = await poll(DigitalRiverSource(dr_client), store, sim)
    assert isinstance(report, CycleReport)
    assert sum(report.rejected.values()) == 1
    assert set(store.tracked("dr", [t.task_id for t in good])) == {t.task_id for t in good}
    [logged] = [e for e in logs if e["event"] == "api.record_rejected"]
    assert logged["page"] == 1
    assert logged["index"] == 2  # its position on the page
    assert logged["reason"] in report.rejected


async def test_a_wrong_typed_total_size_costs_nothing(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore
) -> None:
    task = sim.add_task(status="FAILED", received=sim.now() - timedelta(minutes=1))
    sim.inject(Fault("mangle", patch={"totalSize": {"many": True}}, endpoint="dr.list"))
    report = await poll(DigitalRiverSource(dr_client), store, sim)
    assert isinstance(report, CycleReport)
    assert task.task_id in store.tracked("dr", [task.task_id])


async def test_a_task_id_is_one_path_segment(sim: Simulator, dr_client: DigitalRiverClient) -> None:
    """An id with CR/LF or a slash reaches the server as data (a 404), never as a URL."""
    for task_id in ("t\r\nHost: evil", "../../admin", "a b/c?d#e"):
        with pytest.raises(NotFoundError):
            await dr_client.get_task(task_id)


UNUSABLE_JOBS = {
    "created_at past year 9999 in UTC": {
        "id": "j-late",
        "attributes": {"type": "product-import", "status": "failed",
                       "created_at": "9999-12-31T23:59:59-01:00"},
    },
    "a null item": None,
    "a job id with CR/LF": {
        "id": "j\r\n1",
        "attributes": {"type": "product-import", "status": "failed",
                       "created_at": "2026-03-01T11:59:00.000Z"},
    },
    "no attributes": {"id": "j-bare"},
}  # fmt: skip


@pytest.mark.parametrize("record", UNUSABLE_JOBS.values(), ids=UNUSABLE_JOBS.keys())
async def test_one_unusable_job_is_rejected_counted_and_the_poll_succeeds(
    sim: Simulator,
    ep_client: ElasticPathClient,
    ep_jobs: ElasticPathJobs,
    store: SqliteStateStore,
    record: Any,
) -> None:
    good = ep_jobs.add_job(status="failed", created_ms=sim.now_ms() - 60_000)
    sim.inject(Fault("mangle", records=[record], append=True, endpoint="ep.list"))
    report = await poll(ElasticPathSource(ep_client), store, sim)
    assert isinstance(report, CycleReport)
    assert sum(report.rejected.values()) == 1
    assert good.job_id in store.tracked("ep", [good.job_id])


@pytest.mark.parametrize("replacement", [[None, 7], []], ids=["all rejected", "empty"])
async def test_a_page_without_usable_tasks_does_not_end_the_listing(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore, replacement: list[Any]
) -> None:
    """The cursor is followed whenever it is there: the tasks of page 2 are seen, and the
    checkpoint cannot move past them unseen."""
    sim.generate(60, begin=sim.now() - timedelta(minutes=50), end=sim.now() - timedelta(minutes=1))
    page_two = sorted(sim.tasks.by_id.values(), key=lambda t: t.key)[50:]
    sim.inject(Fault("mangle", records=replacement, endpoint="dr.list"))
    report = await poll(DigitalRiverSource(dr_client), store, sim)
    assert isinstance(report, CycleReport)
    assert sim.requests["dr.list"] == 2
    assert set(store.tracked("dr", [t.task_id for t in page_two])) == {t.task_id for t in page_two}


async def test_json_nested_100000_deep_is_a_recorded_failed_poll_then_recovery(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore
) -> None:
    source = DigitalRiverSource(dr_client)
    sim.inject(Fault("deep_json", size=100_000, endpoint="dr.list"))
    failed = await poll(source, store, sim)
    assert isinstance(failed, PollFailed)
    assert isinstance(failed.error, MalformedResponseError)
    assert "nested" in failed.message
    assert store.source_view("dr").checkpoint is None  # nothing of it was committed
    recovered = await poll(source, store, sim)
    assert isinstance(recovered, CycleReport)


async def test_json_deeper_than_the_limit_is_refused(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), source_name="dr",
        retry=FAST_RETRY, limits=ResponseLimits(max_json_depth=8),
    )  # fmt: skip
    sim.inject(Fault("deep_json", size=9, endpoint="dr.list"))
    with pytest.raises(MalformedResponseError, match="deeper than 8 levels"):
        await client.list_page(TaskQuery())


async def test_a_trickling_answer_cannot_hold_a_poll_past_its_deadline(
    sim: Simulator, http: httpx.AsyncClient, store: SqliteStateStore
) -> None:
    """httpx's timeout is per read and a byte arrives every 0.2 s: only the attempt and
    cycle deadlines stop it."""
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), source_name="dr",
        retry=RetryPolicy(attempts=10, total_timeout=60, wait_initial=0.01),
        limits=ResponseLimits(attempt_timeout=30),
    )  # fmt: skip
    sim.inject(Fault("trickle", delay=0.2, remaining=10, endpoint="dr.list"))
    settings = PollSettings(initial_lookback=timedelta(hours=1), deadline=timedelta(seconds=2))
    started = time.monotonic()
    failed = await poll(DigitalRiverSource(client), store, sim, settings)
    assert time.monotonic() - started < 4
    assert isinstance(failed, PollFailed)
    assert "deadline of 2s" in failed.message
    assert store.record_poll_failure("dr", sim.now(), "again") <= sim.now()  # it was recorded


async def test_each_attempt_has_a_hard_deadline(sim: Simulator, http: httpx.AsyncClient) -> None:
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), source_name="dr",
        retry=RetryPolicy(attempts=2, total_timeout=10, wait_initial=0.01),
        limits=ResponseLimits(attempt_timeout=1),
    )  # fmt: skip
    sim.inject(Fault("trickle", delay=0.2, remaining=1, endpoint="dr.list"))
    started = time.monotonic()
    page = await client.list_page(TaskQuery())
    assert page.tasks == ()  # the second attempt answered at once
    assert time.monotonic() - started < 3
    assert sim.requests["dr.list"] == 2


async def test_retry_total_includes_retry_after(sim: Simulator, http: httpx.AsyncClient) -> None:
    """A ``Retry-After: 3600`` longer than what is left of ``retry_total`` is not waited."""
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), source_name="dr",
        retry=RetryPolicy(attempts=5, total_timeout=2, max_retry_after=120),
    )  # fmt: skip
    sim.inject(Fault("rate_limit", retry_after=3600, endpoint="dr.list"))
    started = time.monotonic()
    async with asyncio.timeout(10):
        with pytest.raises(RateLimitedError):
            await client.list_page(TaskQuery())
    assert time.monotonic() - started < 1.5
    assert sim.requests["dr.list"] == 1


async def test_a_gzip_bomb_is_refused_at_the_body_limit(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), source_name="dr",
        retry=FAST_RETRY, limits=ResponseLimits(max_body_bytes=1 << 20),
    )  # fmt: skip
    sim.inject(Fault("gzip_bomb", size=64 << 20, endpoint="dr.list"))
    with pytest.raises(MalformedResponseError, match=r"more than 1,048,576 bytes"):
        await client.list_page(TaskQuery())
    assert sim.requests["dr.list"] == 1  # refused, not retried


async def test_endless_cursors_stop_at_the_page_budget(
    sim: Simulator, http: httpx.AsyncClient, store: SqliteStateStore
) -> None:
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), source_name="dr",
        retry=FAST_RETRY, max_pages=20,
    )  # fmt: skip
    sim.inject(Fault("endless_cursor", remaining=100_000, endpoint="dr.list"))
    failed = await poll(DigitalRiverSource(client), store, sim)
    assert isinstance(failed, PollFailed)
    assert "did not end within 20 pages" in failed.message
    assert "sources.dr.max_pages_per_cycle" in failed.message
    assert sim.requests["dr.list"] == 20
    assert store.source_view("dr").checkpoint is None  # nothing of it was committed


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_compressed_answers_are_read(
    sim: Simulator, dr_client: DigitalRiverClient, coding: str
) -> None:
    """The body is inflated by taskwarden itself, in bounded steps: honest compressed
    answers read as ever."""
    sim.compression = coding
    sim.generate(120, begin=sim.now() - timedelta(days=1), end=sim.now())
    pages = [p async for p in dr_client.iter_pages(TaskQuery())]
    assert sum(len(p.tasks) for p in pages) == 120
    assert sim.request_log[-1][2].get("Accept-Encoding", "").startswith("gzip")
