"""The Digital River client against the simulator, over real sockets."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import structlog

from taskwarden.errors import (
    AuthenticationError,
    ConnectionFailedError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)
from taskwarden.simulator.faults import Fault
from taskwarden.sources.digitalriver import DigitalRiverClient, TaskQuery, make_auth
from taskwarden.sources.http import RetryPolicy

from .conftest import API_KEY, FAST_RETRY, T0

if TYPE_CHECKING:
    import httpx

    from taskwarden.simulator import Simulator


def _spread(sim: Simulator, count: int, *, days: float = 10) -> None:
    sim.generate(count, begin=T0 - timedelta(days=days), end=T0 - timedelta(minutes=1))


# --- pagination -----------------------------------------------------------------------------


async def test_120_tasks_come_in_three_pages_with_correct_cursors(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    _spread(sim, 120)
    pages = [page async for page in dr_client.iter_pages(TaskQuery())]
    assert [len(p.tasks) for p in pages] == [50, 50, 20]
    assert all(p.total_size == 120 for p in pages)
    assert pages[0].next_cursor == pages[0].tasks[-1].task_id
    assert pages[1].next_cursor == pages[1].tasks[-1].task_id
    assert pages[2].next_cursor is None
    assert pages[0].previous_cursor is None
    assert pages[1].previous_cursor == pages[1].tasks[0].task_id
    ids = [t.task_id for p in pages for t in p.tasks]
    assert len(set(ids)) == 120
    received = [t.received_time for p in pages for t in p.tasks]
    assert received == sorted(received)
    assert sim.requests["dr.list"] == 3


async def test_ending_before_walks_back(sim: Simulator, dr_client: DigitalRiverClient) -> None:
    _spread(sim, 120)
    pages = [page async for page in dr_client.iter_pages(TaskQuery())]
    back = await dr_client.list_page(TaskQuery(ending_before=pages[2].tasks[0].task_id))
    assert [t.task_id for t in back.tasks] == [t.task_id for t in pages[1].tasks]
    assert back.next_cursor == pages[1].tasks[-1].task_id
    assert back.previous_cursor == pages[1].tasks[0].task_id


# --- filters --------------------------------------------------------------------------------


async def test_status_filter_takes_a_comma_list(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.add_task(status="FAILED", received=T0 - timedelta(hours=3))
    sim.add_task(status="PROCESSING", received=T0 - timedelta(hours=2))
    sim.add_task(status="COMPLETED", received=T0 - timedelta(hours=1))
    listing = await dr_client.list_all(TaskQuery(task_status=("FAILED", "PROCESSING")))
    assert sorted(t.status for t in listing.tasks) == ["FAILED", "PROCESSING"]
    assert sim.request_log[-1][1]["taskStatus"] == "FAILED,PROCESSING"


async def test_received_time_window_and_rendering(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    inside = sim.add_task(received=T0 - timedelta(days=2))
    sim.add_task(received=T0 - timedelta(days=5))
    begin, end = T0 - timedelta(days=3), T0 - timedelta(days=1)
    listing = await dr_client.list_all(TaskQuery(begin_received_time=begin, end_received_time=end))
    assert [t.task_id for t in listing.tasks] == [inside.task_id]
    sent = sim.request_log[-1][1]
    assert sent["beginReceivedTime"] == "2026-02-26T12:00:00.000Z"
    assert sent["endReceivedTime"] == "2026-02-28T12:00:00.000Z"


async def test_default_window_is_the_last_30_days(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.add_task(received=T0 - timedelta(days=31))
    recent = sim.add_task(received=T0 - timedelta(days=29))
    page = await dr_client.list_page(TaskQuery())
    assert [t.task_id for t in page.tasks] == [recent.task_id]
    assert page.window_end == T0
    assert page.window_begin == T0 - timedelta(days=30)


async def test_a_begin_only_listing_covers_30_days(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.add_task(received=T0 - timedelta(days=50))
    in_slice = sim.add_task(received=T0 - timedelta(days=35))
    sim.add_task(received=T0 - timedelta(days=5))
    page = await dr_client.list_page(TaskQuery(begin_received_time=T0 - timedelta(days=40)))
    assert [t.task_id for t in page.tasks] == [in_slice.task_id]
    assert page.window_end == T0 - timedelta(days=10)


async def test_limit_is_sent_and_bounded(sim: Simulator, dr_client: DigitalRiverClient) -> None:
    _spread(sim, 12)
    page = await dr_client.list_page(TaskQuery(limit=5))
    assert len(page.tasks) == 5
    assert sim.request_log[-1][1]["limit"] == "5"
    with pytest.raises(InvalidRequestError, match="between 1 and 50"):
        TaskQuery(limit=51)
    with pytest.raises(InvalidRequestError, match="not both"):
        TaskQuery(starting_after="a", ending_before="b")


async def test_product_id_and_erid_filters(sim: Simulator, dr_client: DigitalRiverClient) -> None:
    product = {"productId": "51473680080", "externalReferenceId": "sku-red", "productType": "BASE"}
    mine = sim.add_task(products=[product], received=T0 - timedelta(hours=2))
    sim.add_task(received=T0 - timedelta(hours=1))
    by_id = await dr_client.list_all(TaskQuery(product_id="51473680080"))
    assert [t.task_id for t in by_id.tasks] == [mine.task_id]
    assert "x-erid-as-pid" not in sim.request_log[-1][2]
    by_erid = await dr_client.list_all(TaskQuery(product_id="sku-red", product_id_is_erid=True))
    assert [t.task_id for t in by_erid.tasks] == [mine.task_id]
    assert sim.request_log[-1][2]["x-erid-as-pid"] == "true"
    # Without the header, an ERID is not a product id.
    assert (await dr_client.list_all(TaskQuery(product_id="sku-red"))).tasks == ()


async def test_detail_carries_errors(sim: Simulator, dr_client: DigitalRiverClient) -> None:
    task = sim.add_task(request_type="DEPLOY_PRODUCT")
    sim.set_status(
        task.task_id,
        "FAILED",
        deployment_errors=[{"errorCode": "PRICE_MISSING", "description": "No price for EUR"}],
        deployment_warnings=[{"errorCode": "IMAGE_SMALL", "description": "Image < 500px"}],
    )
    details = await dr_client.get_task(task.task_id)
    assert details.task.status == "FAILED"
    assert details.task.finished_time == T0
    assert details.deployment_errors[0].code == "PRICE_MISSING"
    assert details.deployment_warnings[0].description == "Image < 500px"
    assert details.errors == ()


# --- error classes --------------------------------------------------------------------------


async def test_400_is_invalid_request_with_the_server_message_and_no_retry(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    with pytest.raises(InvalidRequestError, match="Invalid taskStatus") as caught:
        await dr_client.list_page(TaskQuery(task_status=("BOGUS",)))
    assert caught.value.status_code == 400
    assert sim.requests["dr.list"] == 1


async def test_404_is_not_found(sim: Simulator, dr_client: DigitalRiverClient) -> None:
    with pytest.raises(NotFoundError, match="task was not found"):
        await dr_client.get_task("no-such-task")
    assert sim.requests["dr.detail"] == 1


@pytest.mark.parametrize(("scheme", "status"), [("basic", 401), ("bearer", 403)])
async def test_bad_credentials_are_authentication_errors(
    sim: Simulator, http: httpx.AsyncClient, scheme: str, status: int
) -> None:
    wrong = "sk_test_wrong_key_99999"
    client = DigitalRiverClient(
        http,
        base_url=sim.base_url,
        auth=make_auth(scheme, wrong),
        source_name="dr-eu",
        retry=FAST_RETRY,  # type: ignore[arg-type]
    )
    with pytest.raises(AuthenticationError) as caught:
        await client.list_page(TaskQuery())
    assert caught.value.status_code == status
    assert "API key of source 'dr-eu'" in str(caught.value)
    assert ".." not in str(caught.value)  # the vendor's full stop is not doubled
    assert wrong not in str(caught.value)
    assert sim.requests["dr.list"] == 1


async def test_bearer_auth_works(sim: Simulator, http: httpx.AsyncClient) -> None:
    client = DigitalRiverClient(http, base_url=sim.base_url, auth=make_auth("bearer", API_KEY))
    assert (await client.list_page(TaskQuery())).tasks == ()


# --- injected faults and recovery ------------------------------------------------------------


async def test_429_waits_for_retry_after_then_recovers(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    _spread(sim, 3)
    sim.inject(Fault("rate_limit", retry_after=1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with structlog.testing.capture_logs() as logs:
        page = await dr_client.list_page(TaskQuery())
    assert loop.time() - started >= 1.0
    assert len(page.tasks) == 3
    assert sim.requests["dr.list"] == 2
    retries = [e for e in logs if e["event"] == "stamina.retry_scheduled"]
    assert len(retries) == 1
    assert retries[0]["wait_for"] == 1.0
    assert "RateLimitedError" in retries[0]["caused_by"]


async def test_5xx_is_retried_with_backoff_then_recovers(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.inject(Fault("server_error", remaining=2, status=503))
    with structlog.testing.capture_logs() as logs:
        await dr_client.list_page(TaskQuery())
    assert sim.requests["dr.list"] == 3
    assert len([e for e in logs if e["event"] == "stamina.retry_scheduled"]) == 2


async def test_retries_are_bounded_in_attempts(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.inject(Fault("server_error", remaining=100))
    with pytest.raises(ServerError, match="HTTP 500"):
        await dr_client.list_page(TaskQuery())
    assert sim.requests["dr.list"] == FAST_RETRY.attempts


async def test_retries_are_bounded_in_total_time(sim: Simulator, http: httpx.AsyncClient) -> None:
    policy = RetryPolicy(attempts=100, total_timeout=1.5, wait_initial=0.01, wait_max=0.01)
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), retry=policy
    )
    sim.inject(Fault("rate_limit", remaining=100, retry_after=0.6))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RateLimitedError):
        await client.list_page(TaskQuery())
    assert loop.time() - started < 3.0
    assert 2 <= sim.requests["dr.list"] <= 4


async def test_a_long_retry_after_is_capped(sim: Simulator, http: httpx.AsyncClient) -> None:
    policy = RetryPolicy(attempts=3, total_timeout=10, max_retry_after=0.05)
    client = DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", API_KEY), retry=policy
    )
    sim.inject(Fault("rate_limit", retry_after=3600))
    await client.list_page(TaskQuery())
    assert sim.requests["dr.list"] == 2


async def test_slow_answer_times_out_then_recovers(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.inject(Fault("slow", delay=3.0))  # the fixture's client timeout is 2 s
    page = await dr_client.list_page(TaskQuery())
    assert page.tasks == ()
    assert sim.requests["dr.list"] == 2


async def test_dropped_connection_is_retried(sim: Simulator, dr_client: DigitalRiverClient) -> None:
    sim.inject(Fault("drop"))
    await dr_client.list_page(TaskQuery())
    assert sim.requests["dr.list"] == 2


async def test_dropped_connections_exhaust_into_a_typed_error(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.inject(Fault("drop", remaining=10))
    with pytest.raises(ConnectionFailedError, match="connection failed"):
        await dr_client.list_page(TaskQuery())


async def test_malformed_json_is_a_named_error_and_the_next_call_recovers(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.inject(Fault("malformed"))
    with pytest.raises(MalformedResponseError, match=r"not JSON.*<html>"):
        await dr_client.list_page(TaskQuery())
    assert (await dr_client.list_page(TaskQuery())).tasks == ()


async def test_wrong_shape_is_a_named_error_and_the_next_call_recovers(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    sim.inject(Fault("wrong_shape"))
    with pytest.raises(MalformedResponseError, match="wrong shape: tasks"):
        await dr_client.list_page(TaskQuery())
    assert (await dr_client.list_page(TaskQuery())).tasks == ()


async def test_faults_can_target_one_endpoint(
    sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    task = sim.add_task()
    sim.inject(Fault("server_error", endpoint="dr.detail"))
    await dr_client.list_page(TaskQuery())
    assert sim.requests["dr.list"] == 1
    await dr_client.get_task(task.task_id)
    assert sim.requests["dr.detail"] == 2


# --- secrets --------------------------------------------------------------------------------


async def test_the_api_key_never_shows(sim: Simulator, http: httpx.AsyncClient) -> None:
    for scheme in ("basic", "bearer"):
        auth = make_auth(scheme, API_KEY)  # type: ignore[arg-type]
        assert API_KEY not in repr(auth)
        client = DigitalRiverClient(http, base_url=sim.base_url, auth=auth, retry=FAST_RETRY)
        assert API_KEY not in repr(client)
        assert API_KEY not in repr(client.transport.__dict__)
        sim.inject(Fault("server_error", remaining=FAST_RETRY.attempts))
        with structlog.testing.capture_logs() as logs, pytest.raises(ServerError) as caught:
            await client.list_page(TaskQuery())
        assert API_KEY not in repr(logs)
        assert API_KEY not in str(caught.value)
        assert API_KEY not in repr(caught.value)
